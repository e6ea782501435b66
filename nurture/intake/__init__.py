"""Intake: what comes in from outside and becomes leads and events. The CSV import,
leads arriving one at a time (forms and the leads API), events from other systems,
web forms with double opt-in, and erasure (the way out).

May import: the core modules, the settings, :mod:`nurture.language`,
:mod:`nurture.store`, :mod:`nurture.engine` and :mod:`nurture.mail`. Not
:mod:`nurture.sales`: the two are siblings.
"""
