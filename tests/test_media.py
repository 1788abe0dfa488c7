import base64
import io
import os
import socket
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from data.errors import BadInputError
from data.media import MAX_MEDIA_BYTES, decode_image, read_media_bytes
from data.tsv import TsvFile
from helpers import build_task, read_lines, set_cell, write_tsv

from conftest import SHARED_DATA

COCO_IMAGES = os.path.join(SHARED_DATA, "coco-mini/images")
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


def read_without_blocking(cell, media_dir, seconds=10):
    """``read_media_bytes``'s result or error; if it still waits after ``seconds`` (in ``open`` of a FIFO,
    for a writer), a writer is let in and out, so that the read returns (empty) instead of hanging."""
    outcome = []

    def read():
        try:
            outcome.append(read_media_bytes(cell, media_dir, WHERE))
        except BadInputError as error:
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    if reader.is_alive():
        os.close(os.open(os.path.join(media_dir, cell), os.O_WRONLY))
        reader.join()
    return outcome[0]


def test_a_fifo_is_refused_by_its_type_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    error = read_without_blocking("pipe.jpg", str(tmp_path))
    assert isinstance(error, BadInputError) and error.line == 7
    assert f"media file {tmp_path / 'pipe.jpg'} is a FIFO, not a regular file" in str(error)


def test_a_socket_a_device_and_a_folder_are_refused_by_their_type(tmp_path):
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "socket.jpg"))
        assert "is a socket, not a regular file" in str(bad_input(read_media_bytes, "socket.jpg", str(tmp_path), WHERE))
    assert "/dev/./null is a character device, not a regular file" in str(
        bad_input(read_media_bytes, "./null", "/dev", WHERE))  # read, it gave 0 bytes; /dev/zero never ends
    (tmp_path / "folder.jpg").mkdir()
    assert "is a directory, not a regular file" in str(bad_input(read_media_bytes, "folder.jpg", str(tmp_path), WHERE))


def test_a_huge_sparse_file_is_refused_before_it_is_read(tmp_path):
    with open(tmp_path / "huge.jpg", "wb") as f:
        f.truncate(MAX_MEDIA_BYTES * 4)  # 4 GiB of holes: no disk, but reading it whole would need the memory
    error = bad_input(read_media_bytes, "huge.jpg", str(tmp_path), WHERE)
    assert str(error).startswith("file.tsv:7: column 5 (image): media file ")
    assert f"huge.jpg holds {MAX_MEDIA_BYTES * 4} bytes, more than the limit of {MAX_MEDIA_BYTES}" in str(error)


def test_media_over_the_byte_limit_is_refused_from_a_file_and_from_base64(tmp_path):
    data = bytes(range(256)) * 4  # 1024 bytes
    (tmp_path / "a.bin").write_bytes(data)
    assert read_media_bytes("a.bin", str(tmp_path), WHERE, max_bytes=1024) == data
    assert "holds 1024 bytes, more than the limit of 1023" in str(
        bad_input(read_media_bytes, "a.bin", str(tmp_path), WHERE, max_bytes=1023))
    for size in (1022, 1023, 1024):  # two, one and no padding characters
        cell = base64.b64encode(data[:size]).decode()
        assert read_media_bytes(cell, None, WHERE, max_bytes=size) == data[:size]
        error = bad_input(read_media_bytes, cell, None, WHERE, max_bytes=size - 1)
        assert f"base64 cell holds {size} bytes, more than the limit of {size - 1}" in str(error)


def test_the_task_option_bounds_media_reads_and_names_the_row(tmp_path, vocab_dir, demo_dir):
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "photo.jpg").write_bytes(coco_bytes())
    row = read_lines(f"{demo_dir}/caption_valid.tsv", 1)[0]
    data = write_tsv(tmp_path / "rows.tsv", [set_cell(row, 5, "pipe.jpg"), set_cell(row, 5, "photo.jpg")])
    task = build_task("caption", data, vocab_dir, media_dir=str(tmp_path), max_media_bytes=len(coco_bytes()) - 1)
    task.load_dataset("valid")
    errors = [bad_input(task.dataset("valid").__getitem__, i) for i in (0, 1)]
    assert [(e.path, e.line, e.column) for e in errors] == [(data, 1, 5), (data, 2, 5)]
    assert "is a FIFO" in str(errors[0]) and f"more than the limit of {len(coco_bytes()) - 1}" in str(errors[1])


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


def test_a_png_holding_half_its_rows_is_refused_not_blackened():
    """Its pixel data is a complete zlib stream of the first 8 of 16 rows: PIL decoded it with a black
    bottom half, even with LOAD_TRUNCATED_IMAGES off."""
    rows = b"".join(b"\x00" + bytes([200, 100, 50]) * 16 for _ in range(8))
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")
    assert "cannot decode image: truncated or corrupt PNG data" in str(bad_input(decode_image, data, WHERE))


@pytest.mark.parametrize("fraction", [0.5, 0.9])
@pytest.mark.parametrize("form", ["PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_truncated_image_data_is_refused_in_every_format(form, fraction):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=form)
    data = buffer.getvalue()
    assert decode_image(data, WHERE).pixels.shape == (3, 32, 32)
    assert "cannot decode image" in str(bad_input(decode_image, data[: int(len(data) * fraction)], WHERE))


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
