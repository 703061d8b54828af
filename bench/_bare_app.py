"""The serving bench's floor: a bare FastAPI endpoint that only calls the XGBoost booster.

No validation, no calibration, no explanation, no audit: the least any HTTP service around
the same model can do. ``python bench/_bare_app.py BOOSTER.json PORT``.
"""

from __future__ import annotations

import sys

import numpy as np
import uvicorn
import xgboost as xgb
from fastapi import FastAPI
from pydantic import BaseModel


class Row(BaseModel):
    x: list[float | None]


def make_app(booster_path: str) -> FastAPI:
    booster = xgb.Booster(model_file=booster_path)
    booster.set_param({"nthread": 1})
    app = FastAPI()

    # async: the call runs on the event loop, with no round trip through the thread pool
    @app.post("/predict")
    async def predict(row: Row) -> dict[str, float]:
        X = np.array([[np.nan if v is None else v for v in row.x]], dtype=np.float32)
        return {"p": float(booster.inplace_predict(X)[0])}

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    return app


if __name__ == "__main__":
    uvicorn.run(
        make_app(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        access_log=False,
        log_level="warning",
    )
