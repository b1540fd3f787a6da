"""The plain-Python baseline for `make bench`: gzip + json.load over every file, the same counting as
`tokenwatch scan` (records, expired-token errors per principal and session, related codes, eventID dedup)."""
import collections
import gzip
import json
import os
import sys

EXPIRED = {"ExpiredToken", "ExpiredTokenException"}
RELATED = {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
           "IncompleteSignature", "RequestExpired"}


def principal_of(identity):
    issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
    if issuer.get("arn"):
        return issuer["arn"]
    return identity.get("arn") or identity.get("invokedBy") or "unknown"


def main(root):
    records = expired = 0
    seen = set()
    per_session = collections.Counter()
    related = collections.Counter()
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".json.gz"):
                continue
            with gzip.open(os.path.join(folder, name)) as handle:
                for record in json.load(handle)["Records"]:
                    records += 1
                    code = (record.get("errorCode") or "").removeprefix("Client.")
                    if code not in EXPIRED and code not in RELATED:
                        continue
                    if record.get("eventID") in seen:
                        continue
                    seen.add(record.get("eventID"))
                    if code in RELATED:
                        related[code] += 1
                        continue
                    expired += 1
                    identity = record.get("userIdentity") or {}
                    session = (identity.get("arn") or "").rsplit("/", 1)[-1]
                    per_session[(principal_of(identity), session)] += 1
    print(json.dumps({"records_scanned": records, "expired_token_errors": expired,
                      "sessions": len(per_session), "related": dict(related)}))


if __name__ == "__main__":
    main(sys.argv[1])
