"""Data: image I/O, MATLAB-exact resize, degradations, benchmark and training datasets."""
