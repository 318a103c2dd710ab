"""Test helpers: image factories and small local servers speaking real protocols."""
