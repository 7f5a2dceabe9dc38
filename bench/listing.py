"""Listing competitions by status when there are many of them.

Creates N competitions (half public) in one app on the embedded Redis (or `REDIS_URL`,
under a scratch key prefix that is deleted after), then times C concurrent filtered
listings as the service role and as a user. In-process (ASGI), loopback only.

    python -m bench.listing [--competitions 5300] [--concurrent 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from healthcomp.app import create_app
from healthcomp.core.auth import SERVICE, USER, mint_token
from healthcomp.core.settings import Settings


async def run(competitions: int, concurrent: int) -> None:
    secret = "bench-" + "x" * 40
    settings = Settings.model_construct(
        **{
            **Settings.model_construct().model_dump(),
            "redis_url": os.environ.get("REDIS_URL"),
            "data_dir": Path(tempfile.mkdtemp(prefix="hc-bench-")),
            "supabase_jwt_secret": secret,
            "key_prefix": "bench" + uuid.uuid4().hex[:8],
            "rate_limit_user_per_minute": 0,
            "rate_limit_ip_per_minute": 0,
        }
    )
    service = {"Authorization": f"Bearer {mint_token(secret, user_id=None, role=SERVICE)}"}
    user = {"Authorization": f"Bearer {mint_token(secret, user_id='reader', role=USER)}"}
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            started = time.perf_counter()
            gate = asyncio.Semaphore(32)
            today = time.gmtime()

            async def create(i: int) -> None:
                start = f"{today.tm_year + 1}-01-{1 + i % 28:02d}"
                end = f"{today.tm_year + 1}-02-{1 + i % 28:02d}"
                body = {
                    "id": f"c{i}",
                    "name": f"Competition {i}",
                    "start_date": start,
                    "end_date": end,
                    "visibility": "public" if i % 2 else "private",
                }
                async with gate:
                    resp = await client.post("/api/v1/competitions", json=body, headers=service)
                    resp.raise_for_status()

            await asyncio.gather(*(create(i) for i in range(competitions)))
            print(f"created {competitions} competitions in {time.perf_counter() - started:.1f} s")
            print(f"{'caller':<10} {'listings':>9} {'total s':>9} {'per listing ms':>15}  statuses")
            for name, headers in (("service", service), ("user", user)):
                started = time.perf_counter()
                answers = await asyncio.gather(
                    *(
                        client.get(
                            "/api/v1/competitions",
                            params={"status": "upcoming", "limit": 20, "offset": 40},
                            headers=headers,
                        )
                        for _ in range(concurrent)
                    )
                )
                took = time.perf_counter() - started
                statuses = sorted({a.status_code for a in answers})
                per = took / concurrent * 1000
                print(f"{name:<10} {concurrent:>9} {took:>9.3f} {per:>15.2f}  {statuses}")
            ctx = app.state.ctx
            keys = [k async for k in ctx.r.scan_iter(match=f"{settings.key_prefix}:*")]
            for key in keys:
                await ctx.r.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--competitions", type=int, default=5300)
    parser.add_argument("--concurrent", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.competitions, args.concurrent))


if __name__ == "__main__":
    main()
