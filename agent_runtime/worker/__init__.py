"""One agent type's worker: the consume loop and what it needs per delivery.

``loop`` (the Worker) reads, hands each delivery to the handler pool (``runners``) and commits;
``delivery`` builds commits and trace records, ``fate`` decides what a failure means,
``dead_letters`` builds dead-letter entries and failure replies; ``housekeeping``, ``reclaim``,
``retries`` and ``sweep`` are the side loops; ``supervisor`` runs worker processes.
"""
