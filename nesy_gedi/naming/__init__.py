"""How clusters become concept values: the naming search, the learned map and its prior.

A label-free backbone sorts images into clusters whose numbers mean nothing. Before the
semantic loss can use them, each cluster needs a concept value, per concept domain (the
positions of one domain share a naming; a file may declare several domains). This package
is the one place that decides it, one job per module:

- `score`: `NamingScorer` scores a naming by the training labels it explains through the
  compiled knowledge itself (the circuit evaluated, batched, on the named concepts).
- `search`: `search_naming` finds the naming, exhaustively where the namings are few,
  otherwise by EM and a local search from restarts, with the runner-up and how many
  restarts agree.
- `near`: `near_shortcuts` ranks the wrong maps (merges, swaps, 3-cycles of concept values)
  by the share of training labels they keep, with the same scorer.
- `cluster_map`: `ClusterMap`, the learned cluster -> value map the map phase trains (one
  per domain), and `map_balance_loss`, its prior.
"""
from .cluster_map import ClusterMap, map_balance_loss
from .near import map_label_share, near_shortcuts, value_positions, wrong_maps
from .score import DEFAULT_NOISE, ConceptDomains, NamingScorer
from .search import NAMING_MODES, NamingResult, naming_positions, search_naming

__all__ = ["ConceptDomains", "NamingScorer", "NamingResult", "search_naming", "naming_positions",
           "near_shortcuts", "map_label_share", "value_positions", "wrong_maps", "ClusterMap", "map_balance_loss",
           "NAMING_MODES", "DEFAULT_NOISE"]
