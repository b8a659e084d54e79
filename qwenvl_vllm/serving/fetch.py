"""Bounded http(s) download for the server: one total deadline, a byte limit enforced while streaming.

Every way a client's URL can fail (DNS, refused or reset connection, TLS, HTTP status, too slow, too large)
becomes a ValueError with a clear message, which vLLM's API server answers with 400.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import aiohttp

CHUNK_BYTES = 1 << 16


async def _read_limited(response: aiohttp.ClientResponse, url: str, max_bytes: int) -> bytes:
    if response.status >= 400:
        raise ValueError(f"could not fetch media {url!r}: HTTP {response.status} {response.reason or ''}")
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise ValueError(f"media {url!r} is {declared} bytes, over the {max_bytes}-byte limit")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:  # the declared length may be absent or false
            raise ValueError(f"media {url!r} is larger than the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_bytes_async(url: str, *, deadline_s: float, max_bytes: int, allow_redirects: bool) -> bytes:
    """GET `url` within `deadline_s` seconds in total (connect, headers and body)."""
    timeout = aiohttp.ClientTimeout(total=deadline_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=allow_redirects) as response,
        ):
            return await _read_limited(response, url, max_bytes)
    except (asyncio.TimeoutError, TimeoutError) as exc:
        raise ValueError(
            f"could not fetch media {url!r}: no complete answer within {deadline_s:g} s"
        ) from exc
    except aiohttp.ClientConnectorDNSError as exc:
        raise ValueError(f"could not fetch media {url!r}: host name not found ({exc})") from exc
    except aiohttp.ClientSSLError as exc:
        raise ValueError(f"could not fetch media {url!r}: TLS error ({exc})") from exc
    except (aiohttp.ClientError, OSError) as exc:
        # refused or reset connections, unreachable hosts, bad URLs, too many redirects, broken transfers
        raise ValueError(f"could not fetch media {url!r}: {type(exc).__name__}: {exc}") from exc


def fetch_bytes(url: str, *, deadline_s: float, max_bytes: int, allow_redirects: bool) -> bytes:
    """Blocking form of fetch_bytes_async (vLLM's synchronous chat parser, e.g. `LLM.chat`)."""
    coro = fetch_bytes_async(url, deadline_s=deadline_s, max_bytes=max_bytes, allow_redirects=allow_redirects)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # called from a thread that runs an event loop: run ours on a helper thread instead of nesting loops
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
