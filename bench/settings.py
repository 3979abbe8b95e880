"""Settings for benchmark servers: the production settings plus the floor views' URLs."""

from chatengine.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
