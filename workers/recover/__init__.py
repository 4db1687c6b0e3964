"""`appsvc-dr recover`: the whole stamp back in the documented order, resumable, with its timeline kept.

``choose`` picks the backup set and reads the drills' measured throughput; ``model`` holds the plan's steps and
the operator's targets; ``preflight`` checks every target before anything changes; ``state`` is the recovery's
record in the store (``<stamp>/recoveries/<id>.json``, signed); ``run`` executes the automatable steps with the
restore commands' own code; ``controller`` writes the script for CN0-VM and the manual checklist; ``metrics``
the RTO textfile metrics. A composition-level package, like ``drill``: it restores what several workers stored.
"""
