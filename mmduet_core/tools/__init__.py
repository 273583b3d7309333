"""Tools around the package: side-by-side benchmarks (`bench`), the environment check (`doctor`) and the GPU
check (`gpucheck`)."""
