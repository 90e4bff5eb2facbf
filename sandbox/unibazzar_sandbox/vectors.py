"""The sandbox's stand-in model: a deterministic hashed bag-of-words embedding.

Real models cannot be downloaded here; this one is small, deterministic and gives
nearby vectors to texts sharing words, which is all the ai-service stand-in needs.
"""

from __future__ import annotations

import hashlib
import math

MODEL_NAME = "hashed-bow-v1"
DIMENSION = 16

CANARY_DOCUMENTS = (
    "used calculus textbook in good condition",
    "bicycle for campus commuting with lock",
    "desk lamp led warm light",
    "graphing calculator for engineering courses",
    "dorm mini fridge barely used",
    "organic chemistry lecture notes",
    "laptop stand aluminium adjustable",
    "canary health check listing",
)


def embed(text: str) -> list[float]:
    vector = [0.0] * DIMENSION
    for word in text.lower().split():
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % DIMENSION] += 1.0 if digest[1] % 2 else -1.0
        vector[digest[2] % DIMENSION] += 0.5
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]
