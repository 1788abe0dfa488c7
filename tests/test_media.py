import base64
import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from data.errors import BadInputError
from data.media import decode_image, read_media_bytes
from data.tsv import TsvFile

COCO_IMAGES = "/work/shared/data/coco-mini/images"
COCO_JPEG = "000000000790.jpg"
WHERE = ("file.tsv", 7, 5, "image")


def coco_bytes():
    with open(os.path.join(COCO_IMAGES, COCO_JPEG), "rb") as f:
        return f.read()


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_without_pixels(width, height):
    """A valid PNG header declaring ``width`` x ``height`` followed by no pixel data at all."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", b"") + png_chunk(b"IEND", b"")


def bad_input(call, *args, **kwargs):
    with pytest.raises(BadInputError) as error:
        call(*args, **kwargs)
    return error.value


def test_base64_round_trip_decodes_the_real_image():
    data = coco_bytes()
    assert read_media_bytes(base64.b64encode(data).decode(), None, WHERE) == data
    image = decode_image(data, WHERE)
    width, height = Image.open(io.BytesIO(data)).size
    assert image.size == (width, height) and image.pixels.shape == (3, height, width)
    assert torch.equal(image.pixels.permute(1, 2, 0), torch.from_numpy(np.array(Image.open(io.BytesIO(data)))))


def test_url_safe_and_unpadded_base64_decode_as_ofa_reads_them():
    data = coco_bytes()[:1001]  # 1001 bytes: base64 ends in "=="; the JPEG holds "+" and "/" in either alphabet
    standard, url_safe = base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()
    assert set("+/") <= set(standard) and set("-_") <= set(url_safe)
    for cell in (standard, url_safe, url_safe.rstrip("="), standard.rstrip("=")):
        assert read_media_bytes(cell, None, WHERE) == data


def test_path_is_read_from_the_media_dir():
    assert read_media_bytes(COCO_JPEG, COCO_IMAGES, WHERE) == coco_bytes()


def test_path_in_a_subfolder_and_through_an_inner_symlink(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"abc")
    (tmp_path / "link.bin").symlink_to(tmp_path / "sub" / "a.bin")
    assert read_media_bytes("sub/a.bin", str(tmp_path), WHERE) == b"abc"
    assert read_media_bytes("link.bin", str(tmp_path), WHERE) == b"abc"


def test_error_carries_file_line_column_and_name():
    error = bad_input(read_media_bytes, "", None, WHERE)
    assert (error.path, error.line, error.column, error.column_name) == WHERE
    assert str(error).startswith("file.tsv:7: column 5 (image): ")


@pytest.mark.parametrize("cell", ["../secret.txt", "sub/../../secret.txt"])
def test_dot_dot_escape_is_refused(tmp_path, cell):
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "media" / "sub").mkdir(parents=True)
    assert "outside the media dir" in str(bad_input(read_media_bytes, cell, str(tmp_path / "media"), WHERE))


def test_absolute_path_is_refused(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    error = bad_input(read_media_bytes, str(tmp_path / "a.jpg"), str(tmp_path), WHERE)
    assert "relative" in str(error)


def test_symlink_pointing_outside_is_refused(tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "innocent.jpg").symlink_to(tmp_path / "secret.txt")
    error = bad_input(read_media_bytes, "innocent.jpg", str(tmp_path / "media"), WHERE)
    assert "outside the media dir" in str(error)


def test_path_without_media_dir_is_refused():
    assert "no media dir" in str(bad_input(read_media_bytes, COCO_JPEG, None, WHERE))


def test_missing_file_names_the_path(tmp_path):
    error = bad_input(read_media_bytes, "images/missing.jpg", str(tmp_path), WHERE)
    assert os.path.join(str(tmp_path), "images/missing.jpg") in str(error)
    assert "not found" in str(error)


@pytest.mark.parametrize("cell", ["ab$d", "ab d", "YWJj=ZA==", "QUJDR", "QUJD\\n", "a+b-c*"])
def test_cell_in_neither_base64_alphabet_is_refused(cell):
    assert "invalid base64" in str(bad_input(read_media_bytes, cell, None, WHERE))


def test_undecodable_bytes_are_refused():
    error = bad_input(decode_image, b"certainly not an image", WHERE)
    assert "cannot decode image: not a known image format" in str(error)


def test_truncated_jpeg_is_refused():
    data = coco_bytes()
    error = bad_input(decode_image, data[: len(data) // 2], WHERE)
    assert "cannot decode image" in str(error)
    assert error.line == 7


def test_too_many_pixels_is_refused():
    error = bad_input(decode_image, png_bytes(Image.new("RGB", (1000, 1000))), WHERE, max_pixels=10_000)
    assert "1000x1000" in str(error)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [10_000, 100_000])
def test_too_many_pixels_is_refused_from_the_header_alone(side):
    assert "exceeds" in str(bad_input(decode_image, png_without_pixels(side, side), WHERE))


def test_small_image_without_pixels_fails_at_decoding():
    # The contrast that shows the size check above happens before any pixel is decoded.
    assert "truncated" in str(bad_input(decode_image, png_without_pixels(100, 100), WHERE))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_are_converted_to_rgb(mode):
    image = decode_image(png_bytes(Image.new(mode, (8, 6))), WHERE)
    assert image.size == (8, 6) and image.pixels.shape == (3, 6, 8) and image.pixels.dtype == torch.uint8


def test_path_and_base64_cells_of_a_tsv_give_the_same_image(tmp_path):
    path = tmp_path / "file.tsv"
    path.write_text(f"id0\t{COCO_JPEG}\nid1\t{base64.b64encode(coco_bytes()).decode()}\n")
    tsv = TsvFile(path, selected_cols=[1])
    images = []
    for i in range(len(tsv)):
        where = (tsv.path, tsv.line_number(i), tsv.column_number(0), "image")
        images.append(decode_image(read_media_bytes(tsv.fields(i)[0], COCO_IMAGES, where), where))
    assert torch.equal(images[0].pixels, images[1].pixels)
