"""What nurture tells people without changing anything: ``nurture check`` (every file
of a project, against the real leads), ``nurture status`` and ``nurture report``.

May import everything below the daemon: the core modules, the settings,
:mod:`nurture.language`, :mod:`nurture.store`, :mod:`nurture.engine`,
:mod:`nurture.mail`, :mod:`nurture.sales` and :mod:`nurture.intake`.
"""
