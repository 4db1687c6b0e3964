"""Restore drills: prove that a backup set really restores, without touching production.

``run`` picks the set and runs the drill, ``checks`` restores each component into scratch space with the
restore commands' own code, ``results`` holds the outcome: the table, the drill-result marker stored next to
the set (``<stamp>/<set>/drills/<finished>-<drill id>.json``, no secrets) and the Prometheus textfile metric.
"""
