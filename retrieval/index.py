"""The catalogue's entity embeddings, built once and searched exactly.

``build_index`` embeds the catalogue in chunks of ``chunk_size`` entities. Under torch.distributed
each rank embeds every world-th chunk. With a ``path``, each chunk is written to a folder beside it
(``<path>.parts-<fingerprint>``) as soon as it is done and reused by a rerun, so a killed build resumes;
the assembled index is written atomically to ``path`` and the folder removed. Without one, the ranks
exchange their chunks in memory.

Search is an exact inner product (the embeddings are unit vectors: cosine) with a running top-k over
blocks of entities, in torch, on the queries' device. faiss is not installed here; an approximate
index (IVF, HNSW) for catalogues of many millions would replace ``EntityIndex.search``.

An index records the fingerprint of what it was built from: the catalogue file's SHA-256, the
SHA-256 of the encoder weights, and how entity texts were read. ``load_index`` refuses a file whose
fingerprint differs from the run's, naming what changed.
"""
import hashlib
import json
import logging
import os
import shutil

import numpy as np
import torch
import torch.distributed as dist

from utils.files import atomic_open
from utils.progress import Progress

logger = logging.getLogger(__name__)
SEARCH_BLOCK = 1 << 18  # entities scored per matmul: bounds the queries x entities score matrix


class IndexMismatchError(ValueError):
    """An index file built from another catalogue, other weights or other entity texts."""


def file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(module):
    """SHA-256 of a module's parameters and buffers, by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprint(catalogue_path, encoder, text_settings):
    return {"catalogue": file_digest(catalogue_path), "weights": weights_digest(encoder), "texts": text_settings}


class EntityIndex:
    def __init__(self, embeddings, fingerprint):
        self.embeddings, self.fingerprint = embeddings, fingerprint

    def __len__(self):
        return self.embeddings.size(0)

    def search(self, queries, k):
        """(scores, positions), each Q x k, best first: the ``k`` entities of highest inner product."""
        k = min(k, len(self))
        embeddings = self.embeddings.to(queries.device)
        best_scores = queries.new_full((queries.size(0), 0), float("-inf"))
        best = torch.zeros(queries.size(0), 0, dtype=torch.long, device=queries.device)
        for start in range(0, len(self), SEARCH_BLOCK):
            scores = queries @ embeddings[start:start + SEARCH_BLOCK].t()
            top_scores, top = scores.topk(min(k, scores.size(1)), dim=1)
            merged_scores = torch.cat([best_scores, top_scores], 1)
            merged = torch.cat([best, top + start], 1)
            best_scores, order = merged_scores.topk(min(k, merged.size(1)), dim=1)
            best = merged.gather(1, order)
        return best_scores, best

    def save(self, path):
        with atomic_open(path, "wb") as f:
            np.savez(f, embeddings=self.embeddings.cpu().numpy(), fingerprint=json.dumps(self.fingerprint))


def load_index(path, expected):
    """The index at ``path``; an ``IndexMismatchError`` if it was built from other inputs than ``expected``."""
    with np.load(path) as stored:
        recorded = json.loads(str(stored["fingerprint"]))
        if recorded != expected:
            changed = [key for key in sorted(set(recorded) | set(expected)) if recorded.get(key) != expected.get(key)]
            raise IndexMismatchError(
                f"{path}: the entity index was built from another {' and '.join(changed)} than this run's "
                f"(recorded {', '.join(f'{key} {recorded.get(key)}' for key in changed)}; this run "
                f"{', '.join(f'{key} {expected.get(key)}' for key in changed)}); delete it to rebuild it, "
                "or pass another --retrieval-index")
        return EntityIndex(torch.from_numpy(stored["embeddings"]), recorded)


def rank_and_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_index(embed, count, fingerprint, chunk_size, path=None):
    """The index of ``count`` entities, ``embed(positions)`` giving their N x C embeddings (see the
    module docstring for chunks, ranks and resuming)."""
    rank, world = rank_and_world()
    chunks = [range(start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)]
    parts = None if path is None else parts_folder(path, fingerprint)
    done = embed_chunks(embed, chunks, rank, world, parts)
    index = EntityIndex(torch.from_numpy(assemble(chunks, done, parts, world)), fingerprint)
    if parts is not None:
        barrier(world)  # every rank has read the parts
        if rank == 0:
            index.save(path)
            shutil.rmtree(parts)
        barrier(world)
    return index


def parts_folder(path, fingerprint):
    return f"{path}.parts-{hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]}"


def embed_chunks(embed, chunks, rank, world, parts=None):
    """Embed this rank's chunks (every ``world``-th from ``rank``): into files in ``parts``, skipping those
    there already, or else into the returned {chunk: array}."""
    mine = list(range(rank, len(chunks), world))
    done = set()
    if parts is not None:
        os.makedirs(parts, exist_ok=True)
        done = {c for c in mine if os.path.exists(chunk_file(parts, c))}
        if done:
            logger.info("entity index: %d of this rank's %d chunks are in %s already", len(done), len(mine), parts)
    progress = Progress(f"entity index (rank {rank} of {world})", sum(len(chunks[c]) for c in mine), "entities",
                        initial=sum(len(chunks[c]) for c in done))
    arrays = {}
    for c in mine:
        if c in done:
            continue
        embeddings = embed(list(chunks[c])).float().cpu().numpy()
        if parts is None:
            arrays[c] = embeddings
        else:
            with atomic_open(chunk_file(parts, c), "wb") as f:
                np.save(f, embeddings)
        progress.update(len(chunks[c]))
    progress.report()
    return arrays


def chunk_file(parts, chunk):
    return os.path.join(parts, f"chunk-{chunk:06d}.npy")


def assemble(chunks, done, parts, world):
    """Every chunk's embeddings, in order: from the parts folder once every rank has written its own,
    else gathered from the ranks' memory."""
    if parts is None:
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, done)
            done = {c: array for part in gathered for c, array in part.items()}
        return np.concatenate([done[c] for c in range(len(chunks))])
    barrier(world)
    return np.concatenate([np.load(chunk_file(parts, c)) for c in range(len(chunks))])


def barrier(world):
    if world > 1:
        dist.barrier()
