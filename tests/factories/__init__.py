"""The tests' common objects, made one way: checkpoints, DICOM data sets and images (the root conftest
turns them into fixtures)."""
