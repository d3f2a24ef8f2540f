"""Datasets across sessions: several stores, their roles and the label source, in one TOML file.

:mod:`analysis.datasets.spec` parses and checks the file (pure); :mod:`analysis.datasets.runners`
reads the stores (labels by gelatin batch, the combined SWEI training set, Dask across stores).
"""
