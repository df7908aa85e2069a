"""open_image and probe_image on every awkward kind of file real datasets contain."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captune.data import open_image
from captune.data.images import probe_image, to_rgb
from captune.errors import DataError


def _jpeg(path: Path, size: tuple[int, int] = (40, 30), colour=(200, 30, 30), **kwargs) -> Path:
    Image.new("RGB", size, colour).save(path, "JPEG", quality=90, **kwargs)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming width x height pixels, with almost no data: a decompression bomb."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    path.write_bytes(data + _png_chunk(b"IEND", b""))
    return path


def test_rgb_jpeg_round_trip(tmp_path):
    image = open_image(_jpeg(tmp_path / "a.jpg"))
    assert image.mode == "RGB" and image.size == (40, 30)
    assert abs(int(image.getpixel((5, 5))[0]) - 200) < 10


def test_grayscale_and_bilevel_become_rgb(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "g.png")
    Image.new("1", (8, 8), 1).save(tmp_path / "b.png")
    assert open_image(tmp_path / "g.png").getpixel((0, 0)) == (77, 77, 77)
    assert open_image(tmp_path / "b.png").getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path):
    plain = Image.new("P", (6, 6), 1)
    plain.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    plain.save(tmp_path / "p.png")
    assert open_image(tmp_path / "p.png").getpixel((0, 0)) == (10, 200, 30)
    see_through = Image.new("P", (6, 6), 1)
    see_through.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    see_through.save(tmp_path / "t.png", transparency=1)  # index 1 fully transparent: white after compositing
    assert open_image(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)
    gif = Image.new("P", (6, 6), 0)
    gif.putpalette([255, 0, 0] * 256)
    gif.save(tmp_path / "t.gif", transparency=0)
    assert open_image(tmp_path / "t.gif").getpixel((0, 0)) == (255, 255, 255)


def test_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 255, 0)).save(tmp_path / "clear.png")
    Image.new("RGBA", (4, 4), (0, 0, 255, 255)).save(tmp_path / "solid.png")
    Image.new("LA", (4, 4), (0, 128)).save(tmp_path / "la.png")
    assert open_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)
    assert open_image(tmp_path / "solid.png").getpixel((0, 0)) == (0, 0, 255)
    assert open_image(tmp_path / "la.png").getpixel((0, 0)) in {(127, 127, 127), (128, 128, 128)}


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", "JPEG", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    red, green, blue = open_image(tmp_path / "cmyk.jpg").getpixel((5, 5))
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_images_are_scaled(tmp_path):
    values = np.array([[0, 65535], [32896, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # 16-bit grayscale PNG
    image = open_image(tmp_path / "deep.png")
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((1, 0)) == (255, 255, 255)
    assert image.getpixel((0, 1))[0] == 128
    small = Image.fromarray(np.array([[0, 200]], dtype=np.int32), mode="I")
    assert to_rgb(small).getpixel((1, 0)) == (200, 200, 200)  # already 8-bit range: kept
    signed = Image.fromarray(np.array([[-100, 100]], dtype=np.int32), mode="I")
    assert to_rgb(signed).getpixel((0, 0)) == (0, 0, 0) and to_rgb(signed).getpixel((1, 0)) == (255, 255, 255)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    red, green, blue = open_image(tmp_path / "anim.gif").getpixel((4, 4))
    assert red > 200 and green < 50 and blue < 50


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left
    image.save(tmp_path / "rot.jpg", "JPEG", quality=95, exif=exif)
    upright = open_image(tmp_path / "rot.jpg")
    assert upright.size == (20, 40)
    assert upright.getpixel((10, 3))[0] > 200  # the left band is now at the top
    assert upright.getpixel((10, 36))[0] < 60


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "zero", "text", "missing", "folder"])
def test_bad_files_raise_data_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.jpg"
    if kind == "truncated":
        noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        noisy.save(buffer, "JPEG", quality=90)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif kind == "corrupt":
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("<html>404 not found</html>")
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(DataError) as info:
        open_image(path)
    message = str(info.value)
    assert message.startswith(str(path)) and ";" in message and "\n" not in message


def test_decompression_bomb_is_refused(tmp_path):
    bomb = _bomb_png(tmp_path / "bomb.png", 50_000, 50_000)  # 2.5 G pixels from a ~100-byte file
    with pytest.raises(DataError, match="bomb"):
        open_image(bomb)
    assert probe_image(bomb).error is not None and "bomb" in probe_image(bomb).error
    warn_zone = _bomb_png(tmp_path / "warn.png", 10_000, 10_000)  # between 1x and 2x Pillow's limit
    with pytest.raises(DataError, match="pixels exceeds the limit"):
        open_image(warn_zone)
    with pytest.raises(DataError, match="raise max_pixels"):
        open_image(_jpeg(tmp_path / "ok.jpg", (100, 100)), max_pixels=5_000)


def test_draft_decodes_large_jpegs_at_reduced_size(tmp_path):
    path = _jpeg(tmp_path / "big.jpg", (1600, 1200))
    assert open_image(path).size == (1600, 1200)
    reduced = open_image(path, draft_size=(224, 224))
    assert reduced.size == (400, 300)  # 1/4 scale still covers 224 px
    assert reduced.mode == "RGB"


def test_probe_reads_size_hash_and_catches_truncation(tmp_path):
    good = _jpeg(tmp_path / "good.jpg", (33, 21))
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(good.read_bytes())
    probe = probe_image(good)
    assert (probe.width, probe.height, probe.format, probe.error) == (33, 21, "JPEG", None)
    assert probe.sha1 == probe_image(copy).sha1
    noisy = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, "JPEG", quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[:-400])
    assert probe_image(cut, decode=False).error is None  # the header alone looks fine
    assert "truncated" in probe_image(cut, decode=True).error


@pytest.mark.shared
def test_original_flickr8k_images_load(shared_dir):
    folder = shared_dir / "data" / "flickr8k-originals"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    paths = sorted(folder.glob("*.jpg"))
    assert len(paths) == 60
    for path in paths:
        image = open_image(path, draft_size=(224, 224))
        assert image.mode == "RGB" and min(image.size) >= 112
        full = open_image(path)
        assert max(full.size) <= 500 and full.mode == "RGB"
