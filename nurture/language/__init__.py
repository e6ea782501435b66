"""The language people write: sequence files, email templates, expressions, the
scoring rules, schedules and durations, and the YAML they are written in.

Pure: parsing, checking and evaluating what marketers write, with ``path:line`` for
every problem. No database, no network, no clock of its own (``now`` is an argument).

May import: the core modules (:mod:`nurture.errors`, :mod:`nurture.clock`,
:mod:`nurture.suggest`, :mod:`nurture.problems`, :mod:`nurture.tokens`) and each other.
"""
