"""What comes in: uploads, CSV/zip listing, safe fetching of the bytes behind each item."""
