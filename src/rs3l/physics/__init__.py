"""Simulation: hard events (LHE), re-simulated views, detector response, jets.

``ALGORITHM_VERSION`` is part of every fragment's simulation hash: raise it whenever a change to
this code changes simulated values, so that old fragments are re-made instead of merged with new.
History: 1 first release; 2 N-subjettiness with winner-take-all kT axes (was one-pass kT axes);
3 detector follows the Delphes CMS card (helix propagation, towers, energy flow, card tables).
"""

ALGORITHM_VERSION = 3
