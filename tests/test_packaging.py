"""What `pip install ptxssl` brings: no GPL-licensed package in the default install (ptxssl is
Apache-2.0); the GPL-3.0 JPEG decoder is the opt-in `gpl` extra."""
from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

COPYLEFT = re.compile(r"\bA?GPL|General Public License", re.I)
LESSER = re.compile(r"LGPL|Lesser General Public", re.I)  # weak copyleft, linked as a library: compatible


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_tree(root: str = "ptxssl") -> dict[str, object]:
    """{normalised name: distribution} of `root` and everything its default requirements pull in
    (extras left out), as installed here."""
    seen: dict[str, object] = {}
    todo = [root]
    while todo:
        name = _name(todo.pop())
        if name in seen:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # an optional platform dependency not installed here
        seen[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def licence_text(dist) -> str:
    meta = dist.metadata
    fields = [meta.get("License") or "", meta.get("License-Expression") or ""]
    fields += [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return " | ".join(f.splitlines()[0] if f else "" for f in fields)


def test_the_default_install_has_no_gpl_package():
    tree = installed_tree()
    assert {"torch", "pydicom", "python-gdcm", "pyjpegls", "pylibjpeg-openjpeg"} <= tree.keys()
    gpl = {name: licence_text(d) for name, d in tree.items()
           if COPYLEFT.search(licence_text(d)) and not LESSER.search(licence_text(d))}
    assert not gpl, f"GPL-licensed packages in the default install: {gpl}"


def test_the_licence_check_sees_a_gpl_package():
    """The check above would catch pylibjpeg-libjpeg, whose metadata says GPL-3.0."""
    class Meta(dict):
        def get_all(self, key):
            return self.get(key + "s")
    fake = type("Dist", (), {"metadata": Meta({"License": "GNU General Public License v3 (GPLv3)",
                                               "Classifiers": ["License :: OSI Approved :: GNU General Public "
                                                               "License v3 (GPLv3)"]})})()
    assert COPYLEFT.search(licence_text(fake)) and not LESSER.search(licence_text(fake))


def test_the_gpl_decoder_is_an_opt_in_extra():
    requires = distribution("ptxssl").requires or []
    libjpeg = [Requirement(r) for r in requires if _name(Requirement(r).name) == "pylibjpeg-libjpeg"]
    assert libjpeg and all(r.marker is not None and r.marker.evaluate({"extra": "gpl"}) and
                           not r.marker.evaluate({"extra": ""}) for r in libjpeg)
