"""The schedule producer (``appsvc-dr schedule``): publishes backup-due at cron or interval slots.

* ``triggers`` — cron expressions and ``--every/--at`` intervals, schedule entries ``CRON[=COMPONENTS]``;
* ``slots`` — write-once slot claims in the store (one publish per slot across schedulers, catch-up memory);
* ``run`` — the loop: catch up the newest missed slot once, then claim and publish every slot;
* ``metrics`` — next slot, last published slot, publishes by outcome;
* ``settings`` — the ``APPSVC_DR_SCHEDULE__*`` section.

Kept free of imports here: the root configuration imports ``settings`` from this package."""
