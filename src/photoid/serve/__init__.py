"""`photoid serve`: a web page where researchers identify photos, confirm matches and grow the catalogue.

    photoid serve --catalog CATALOG [--run RUN_DIR ...] [--host 127.0.0.1] [--port 8000]
                  [--blend_weight W] [--threshold T]      (as photoid identify --catalog; default: calibrated)
                  [--reviewers FILE]                      (one access token per reviewer, which names them)

The catalogue and its fold models are loaded once (`identifier`); the pages (`app`) identify uploaded photos with
`photoid identify --catalog`'s numbers, record each decision in the catalogue's decision log through its locked
transaction (`photoid.catalog.decisions`), and browse and export the catalogue. Surveys (`surveys`: import, the
batch job, the review queue and the match view) and quality control by individual (`quality`) are pages of the
same server; who decides is `reviewers`'. It listens on 127.0.0.1 unless told otherwise; any other address needs
an access token, given with --token or generated and printed, or reviewers' tokens (--reviewers).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys

from photoid.core.errors import PhotoidError

TOKEN_ENV = "PHOTOID_SERVE_TOKEN"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", required=True, help="catalogue folder (photoid catalog build, then calibrate)")
    parser.add_argument("--run", dest="runs", action="append", metavar="RUN_DIR",
                        help="where the catalogue's runs are now, if they moved (default: as recorded)")
    parser.add_argument("--records_dir", help="records folder the runs were trained from (default: config.json's)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: this computer only); any other needs a token")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--token", help=f"access token for a non-loopback host (default: ${TOKEN_ENV}, else "
                                        "generated and printed)")
    parser.add_argument("--top", type=int, default=5, help="candidates shown per photo")
    parser.add_argument("--blend_weight", type=float, help="weight of the probabilities (default: calibrated)")
    parser.add_argument("--threshold", type=float, help="normalised score at or below which a photo is new "
                                                        "(default: calibrated)")
    parser.add_argument("--batch_size", type=int, default=16, help="photos identified in one model call, at most")
    parser.add_argument("--max_files", type=int, default=50, help="photos per upload, at most")
    parser.add_argument("--max_photo_mb", type=float, default=25, help="size of one photo, at most (MB)")
    parser.add_argument("--reviewers", metavar="FILE",
                        help="one 'NAME TOKEN' per line: each reviewer opens the page with their own token, which "
                             "names their decisions (tokens of at least 16 characters)")
    parser.add_argument("--claim_seconds", type=float, default=120,
                        help="how long a photo handed to a reviewer stays theirs while they look at it (default: 120)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from photoid.serve.app import Limits, create_app, loopback_hosts
    from photoid.serve.identifier import Identifier

    from photoid.serve.reviewers import read_reviewer_tokens

    if args.top < 1 or args.batch_size < 1 or args.max_files < 1 or args.max_photo_mb <= 0 or args.claim_seconds <= 0:
        raise PhotoidError("--top, --batch_size, --max_files, --max_photo_mb and --claim_seconds must be positive")
    token = args.token or os.environ.get(TOKEN_ENV)
    reviewer_tokens = read_reviewer_tokens(args.reviewers) if args.reviewers else None
    loopback = is_loopback(args.host)
    if not loopback and not token and not reviewer_tokens:
        token = secrets.token_urlsafe(24)
    print(f"loading catalogue {args.catalog} and its models ...", file=sys.stderr, flush=True)
    identifier = Identifier(args.catalog, args.runs, args.records_dir, top=args.top, batch_size=args.batch_size,
                            blend_weight=args.blend_weight, threshold=args.threshold)
    limits = Limits(max_files=args.max_files, max_photo_mb=args.max_photo_mb,
                    max_request_mb=args.max_files * args.max_photo_mb)
    app = create_app(identifier, token=token, allowed_hosts=loopback_hosts(args.port) if loopback else None,
                     limits=limits, reviewer_tokens=reviewer_tokens, claim_seconds=args.claim_seconds)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    address = f"http://{shown_host if ':' not in shown_host else f'[{shown_host}]'}:{args.port}/"
    print(f"photoid serve: {address}" + (f"?token={token}" if token else ""), flush=True)
    if reviewer_tokens:
        print(f"  {len(reviewer_tokens)} reviewers: each opens {address}?token=THEIR_TOKEN", flush=True)
    if not loopback:
        print("  anyone on the network with this address (token included) can change the catalogue", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0
