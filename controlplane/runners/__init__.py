"""Training jobs and runners: the queue, claims under data contracts, leases, results with
lineage, OpenLineage run events, and the runner SDK behind ``controlplane runner start``.

The server side (:mod:`.service`, :mod:`.projections`, :mod:`.content`, :mod:`.openlineage`)
never imports the trainers; the runner side (:mod:`.sdk`, :mod:`.runner`) talks HTTP only and
imports :mod:`.trainers` (and so torch) only when it trains.
"""
