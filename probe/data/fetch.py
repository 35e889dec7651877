"""`probe data fetch`: download MNIST or CIFAR-10 from their canonical URLs, checksums verified.

Files are streamed to a temporary file beside the target and renamed only once the checksum
matches, so an interrupted or corrupted download never leaves a file the loaders would trust.
SFDDD cannot be fetched: Kaggle wants a login and the acceptance of the competition's rules.
"""
from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from probe.data.cifar10 import find_source
from probe.data.mnist import FILES, find_file
from probe.data.paths import resolve_data_dir
from probe.data.spec import get_spec
from probe.errors import DataError
from probe.io import atomic_writer
from probe.progress import progress

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {  # the original files of LeCun et al., as torchvision checks them
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
KAGGLE_COMPETITION = "state-farm-distracted-driver-detection"

urlopen = urllib.request.urlopen  # module attribute, so tests can make the network fail
_BLOCK = 1 << 20


def download(url: str, dest: Path, md5: str, timeout: float = 60) -> Path:
    """url → dest, atomically, only if the MD5 matches. Network trouble → DataError saying what to do."""
    by_hand = f"download it by hand into {dest.parent} (as {dest.name}) and run again"
    digest = hashlib.md5()
    try:
        with urlopen(url, timeout=timeout) as response, atomic_writer(dest) as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress(dest.name, bytes_=True) as bar:
                task = bar.add_task("", total=total)
                while block := response.read(_BLOCK):
                    digest.update(block)
                    out.write(block)
                    bar.advance(task, len(block))
            if digest.hexdigest() != md5:  # raising inside atomic_writer discards the temp file
                raise DataError(f"{url}: checksum mismatch (MD5 {digest.hexdigest()}, expected {md5}): "
                                f"the download is corrupt; try again, or {by_hand}")
    except DataError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:  # offline, DNS, timeout, HTTP error, disk full
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {url} ({reason}); if this machine is offline, {by_hand}") from None
    return dest


def fetch_dataset(name: str, data_dir: str | Path | None = None) -> Path:
    """Make sure the dataset's files are in its folder (downloading what is missing); → the folder."""
    spec = get_spec(name)
    folder = resolve_data_dir(spec.name, data_dir)
    if spec.name == "sfddd":
        raise DataError(
            f"SFDDD comes from Kaggle and cannot be downloaded by probe: accept the rules of the "
            f"competition {KAGGLE_COMPETITION} on kaggle.com, then run "
            f"`kaggle competitions download -c {KAGGLE_COMPETITION}` and unzip it into {folder}, "
            "so that it holds imgs/train/c0..c9, imgs/test and driver_imgs_list.csv"
        )
    if spec.name == "mnist":
        for base in (b for pair in FILES.values() for b in pair):
            try:
                find_file(folder, base)  # already there, gzipped or not
            except DataError:
                download(MNIST_URL + base + ".gz", folder / (base + ".gz"), MNIST_MD5[base + ".gz"])
    else:
        try:
            find_source(folder)
        except DataError:
            download(CIFAR10_URL, folder / CIFAR10_URL.rsplit("/", 1)[1], CIFAR10_MD5)
    return folder
