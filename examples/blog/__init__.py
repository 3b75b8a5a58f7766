"""A blog on a headless CMS, its pages cached by isr-runtime: the main demo.

``cms.py`` is the origin (a tiny Strapi stand-in), ``app.py`` the blog (Starlette, with
`isr.asgi.ISRMiddleware` and `isr.webhook.WebhookApp`), ``walkthrough.py`` runs both and
narrates a publish, an outage and an unpublish. The settings both sides share live here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

__all__ = ["DEMO_SECRET", "webhook_secret"]

#: The webhook secret used when ``ISR_WEBHOOK_SECRET`` is not set. FOR THE DEMO ONLY: it is
#: public, so anybody who can reach a blog running with it can invalidate its cache.
DEMO_SECRET = "demo-secret-do-not-use-in-production"

logger = logging.getLogger("examples.blog")


def webhook_secret(environ: Mapping[str, str] | None = None) -> str:
    """The shared secret the CMS sends with its webhook calls and the blog checks:
    ``ISR_WEBHOOK_SECRET``, else the public `DEMO_SECRET` (with a warning)."""
    env = os.environ if environ is None else environ
    secret = env.get("ISR_WEBHOOK_SECRET")
    if secret:
        return secret
    logger.warning("ISR_WEBHOOK_SECRET is not set: using the public demo secret")
    return DEMO_SECRET
