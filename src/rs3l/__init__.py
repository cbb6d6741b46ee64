"""rs3l: re-simulation-based self-supervised learning for jets (arXiv:2403.07066).

Units: energies, momenta and masses in GeV; lengths (d0, dz, vertices) in mm.
"""

__version__ = "0.1.0"
