"""Photos: normalize (orientation, RGB, resize) under a decode budget, checks, thumbnails."""
