"""Input and output: images (SimpleITK adapter), the study file, atomic writes."""
