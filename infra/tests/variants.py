"""Write copies of infra/template.yaml whose parameter defaults select each delivery option.

checkov reads a template with its parameter defaults and leaves out resources whose condition is then
false, so `checkov -f infra/template.yaml` alone never sees the S3 queues or the log subscription.
`make infra-lint` runs it on these copies too.

    python infra/tests/variants.py OUTPUT_DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cfnmodel import TEMPLATE_PATH

# Defaults that switch on every optional part of one delivery option.
VARIANTS: dict[str, dict[str, str]] = {
    "s3": {
        "Source": "s3",
        "TrailBucketName": "org-trail-logs",
        "TrailBucketAccountId": "444455556666",
        "TrailKmsKeyArn": "arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "TrailNotificationTopicArn": "arn:aws:sns:us-east-1:444455556666:org-trail-objects",
        "AlertEmail": "oncall@example.com",
    },
    "cloudwatch_logs": {
        "Source": "cloudwatch_logs",
        "TrailLogGroupName": "aws-cloudtrail-logs-111122223333",
    },
}


def with_defaults(text: str, defaults: dict[str, str]) -> str:
    """The template text with the Default of each named parameter replaced."""
    for name, value in defaults.items():
        block = re.compile(rf"(?m)^(  {re.escape(name)}:\n(?:    .*\n)*?    Default: ).*$")
        text, count = block.subn(lambda m: m.group(1) + f'"{value}"', text, count=1)
        if count != 1:
            raise KeyError(f"parameter {name} with a Default not found in the template")
    return text


def main(output_dir: str) -> None:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    for name, defaults in VARIANTS.items():
        (out / f"template-{name}.yaml").write_text(with_defaults(text, defaults), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
