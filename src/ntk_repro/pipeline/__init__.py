"""Pipeline stages: thin command-line entries that Snakemake rules call.

Each stage is a module run as ``python -m ntk_repro.pipeline.<stage> <experiment> ...``; it
parses the common arguments and calls ``ntk_repro.experiments.<experiment>.<stage>(...)``.
Stages talk through files only (npz, csv, png/pdf), so every stage also runs by hand.
"""
