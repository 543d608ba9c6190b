"""Download and measure one image: the work behind every image record (download.py fetches
through net/, measure.py reads the header)."""
