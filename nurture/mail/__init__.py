"""Mail, and every other message nurture sends out or hears back.

Composing an email from a step (:mod:`~nurture.mail.compose`, with tracked links and
addresses), sending the outbox (:mod:`~nurture.mail.delivery` through
:mod:`~nurture.mail.transports`, reading refusals with :mod:`~nurture.mail.smtpreply`),
reading replies (:mod:`~nurture.mail.replies`) and calling webhooks
(:mod:`~nurture.mail.webhooks`).

May import: the core modules, the settings, :mod:`nurture.language`,
:mod:`nurture.store` and :mod:`nurture.engine` (the exit rules a message is checked
against before it goes).
"""
