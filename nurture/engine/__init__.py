"""The engine: what sequences do to leads, as functions of their inputs and ``now``.

- :mod:`~nurture.engine.advance`: the pure step of one enrollment;
- :mod:`~nurture.engine.edits`: what a live edit does to the leads in a sequence;
- :mod:`~nurture.engine.catalog`: the deployed versions the engine runs;
- :mod:`~nurture.engine.simulate`: a lead's timeline, with nothing sent;
- :mod:`~nurture.engine.context`: what every stage of a pass is given.

May import: the core modules, the settings, :mod:`nurture.language` and
:mod:`nurture.store`.
"""
