"""docs/pretrained.md covers every checkpoint the shipped configs name, and its URLs are https.

A config that points at ``checkpoints/<file>`` (or at an http(s) URL) without a row in the doc
fails here, naming the file, so the doc follows the configs. Reads text only: no network, no
config build.
"""
import re
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / 'docs' / 'pretrained.md'

# A quoted string literal 'checkpoints/<file>' or "checkpoints/<file>" in a config.
_CKPT_LITERAL = re.compile(r"""['"](?:\./)?checkpoints/([^'"\s]+)['"]""")
# A URL starting with a host character (so prose like `https://` or `http(s)://` is not one).
_URL = re.compile(r"""https?://[A-Za-z0-9][^\s<>()\[\]|`'"]*""")
_HOST = re.compile(r'^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*'
                   r'\.[A-Za-z]{2,}$')


def _config_files():
    return sorted((REPO / 'configs').rglob('*.py'))


def _doc_urls(text):
    return [m.group(0).rstrip('.,;:') for m in _URL.finditer(text)]


def test_configs_reference_checkpoints():
    # guards the regex: the shipped configs do name checkpoints (dozens of them)
    names = {n for f in _config_files() for n in _CKPT_LITERAL.findall(f.read_text())}
    assert len(names) >= 20, sorted(names)


def test_every_config_checkpoint_is_in_the_doc():
    doc = DOC.read_text()
    missing = {}
    for path in _config_files():
        for name in _CKPT_LITERAL.findall(path.read_text()):
            if f'`{name}`' not in doc:
                missing.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert not missing, (
        'docs/pretrained.md has no row for these checkpoints/ files (add the family\'s section '
        'with the official URL, pretraining and converter): '
        + '; '.join(f'{n} (used by {", ".join(ps)})' for n, ps in sorted(missing.items())))


def test_every_config_url_is_in_the_doc():
    doc_urls = set(_doc_urls(DOC.read_text()))
    missing = {}
    for path in _config_files():
        for url in _doc_urls(path.read_text()):
            if url not in doc_urls:
                missing.setdefault(url, []).append(str(path.relative_to(REPO)))
    assert not missing, f'URLs in configs missing from docs/pretrained.md: {missing}'


def test_doc_urls_are_well_formed_https():
    urls = _doc_urls(DOC.read_text())
    assert len(urls) >= 40, urls  # the family tables are there
    bad = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != 'https' or not _HOST.match(parts.hostname or '') or ' ' in url \
                or parts.port is not None or parts.username is not None:
            bad.append(url)
    assert not bad, f'not well-formed https URLs in docs/pretrained.md: {bad}'


@pytest.mark.parametrize('url, ok', [
    ('https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224_ema.pth', True),
    ('https://huggingface.co/a/b/resolve/main/x.pth?download=true', True),
    ('http://dl.fbaipublicfiles.com/x.pth', False),
    ('https://localhost/x.pth', False),
    ('https://user@host.com/x.pth', False),
])
def test_url_check_itself(url, ok):
    parts = urllib.parse.urlsplit(url)
    good = parts.scheme == 'https' and bool(_HOST.match(parts.hostname or '')) \
        and parts.username is None
    assert good is ok


def _registered_converters():
    """Converter names registered in densekit's source (``register_converter('name', ...)``),
    read as text: importing every family would cost seconds."""
    names = set()
    for path in (REPO / 'densekit').rglob('*.py'):
        names.update(re.findall(r"""register_converter\(\s*['"]([a-z_0-9]+)['"]""", path.read_text()))
    return names


def test_doc_names_only_registered_converters_and_all_of_them():
    doc = DOC.read_text()
    registered = _registered_converters()
    assert {'convnext', 'swin', 'van', 'timm_seed'} <= registered, sorted(registered)
    named = set()
    for m in re.finditer(r'Converters?:\s+((?:`[a-z_0-9]+`(?:,\s+|\s+and\s+)?)+)', doc):
        named.update(re.findall(r'`([a-z_0-9]+)`', m.group(1)))
    listed = re.search(r'--list` prints the converter families \(([^)]*)\)', doc)
    assert listed is not None, 'the sentence listing the converter families is gone'
    named_list = set(re.findall(r'`([a-z_0-9]+)`', listed.group(1)))
    assert named_list == registered, sorted(named_list ^ registered)
    unknown = named - registered
    assert not unknown, f'docs/pretrained.md names converters that do not exist: {sorted(unknown)}'
    # timm_seed is described in prose ("converter `timm_seed`")
    undocumented = registered - named - {'timm_seed'}
    assert not undocumented, f'converters without a "Converter:" line: {sorted(undocumented)}'
