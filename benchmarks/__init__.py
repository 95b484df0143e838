"""The benchmarks' figures and notes (results/, README.md); the code is `jaxnas.bench`.

`python -m benchmarks ...` (from the repository root, as older notes write it) still
runs `jaxnas bench ...`; the folder is not installed as a package.
"""
