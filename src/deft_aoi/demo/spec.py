"""The demo workspace's spec: the packaged template with the demo's values (.jpg, few epochs).

The crops are 64 px but the spec asks 224 px: the template's C-RADIO backbone with a learnable difference module
runs in TAO at exactly 224x224 (runners/tao/rules.py: cradio_224_rule); TAO upsamples, the local backend sees the
crops at their own 64 px (runners/local/data.py: internal_size).

Edited line by line rather than re-dumped so the template's explanatory comments survive.
"""

from __future__ import annotations

import re

from deft_aoi.workspace.scaffold import SPEC_TEMPLATE, resource_text

LIGHT = "SolderLight"
IMAGE_EXT = ".jpg"
DEMO_VALUES: dict[str, str] = {
    "image_ext": IMAGE_EXT,
    "image_width": "224",
    "image_height": "224",
    "num_epochs": "6",
    "batch_size": "16",
    "checkpoint_interval": "1",
    "validation_interval": "1",
}
HEADER = (
    "# Visual ChangeNet classify spec of the procedural demo workspace (`deft demo-data`): one light,\n"
    "# 64x64 .jpg crops (resized to C-RADIO's 224x224) and a short schedule so a loop finishes quickly.\n"
    "# Comments below say what a real workspace must edit.\n"
)


def demo_spec_text() -> str:
    text = resource_text(SPEC_TEMPLATE)
    body = text[text.index("\ntask:") + 1 :]
    for key, value in DEMO_VALUES.items():
        body, n = re.subn(rf"^(\s*{key}:\s*)([^\s#]+)", rf"\g<1>{value}", body, flags=re.MULTILINE)
        if n != 1:
            raise RuntimeError(f"template spec has {n} '{key}:' lines; expected exactly one")
    if not re.search(rf"^\s*{LIGHT}:\s*0\b", body, flags=re.MULTILINE):
        raise RuntimeError(f"template spec no longer maps the light {LIGHT} to index 0")
    return HEADER + body
