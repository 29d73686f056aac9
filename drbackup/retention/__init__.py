"""Retention: which backups ``drbackup prune`` keeps, with restic ``forget`` semantics.

``policy.py`` holds the pure rules; ``drbackup/config/retention.py`` the ``retention:`` section of a target.
See ``docs/retention.md``.
"""
