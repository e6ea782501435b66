"""The pass, one module per stage, in the order the daemon runs them::

    reload → score → enroll → resume → advance → deliver → settle → hand-off

Each stage is a function that takes what it needs (the :class:`~nurture.engine.context.Context`,
the catalog, the scoring rules, ``now``) and returns a small report;
:func:`nurture.stages.passes.full_pass` calls them in order and adds the reports up.
:class:`nurture.stages.process.PassProcess` runs the pass in a process of its own, for
the daemon.

May import: everything below it (the core, the settings, language, store, engine,
mail, sales, intake). Not the daemon, the web side or the command line.
"""
