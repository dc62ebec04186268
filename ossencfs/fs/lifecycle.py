"""The life of a dirty file: staging made, written, committed to the journal, uploaded, done.

Why it exists: a dirty file's state is its ``Node``'s ``DirtyState`` and its ``Staging``'s
``KeyState`` (``fs.dirtystate``: the enums and their named transitions), plus the node's
staging, unlinked, exists_remote, etag, kernel_etag and the staging's changed, synced, relay,
base_etag, prior_keys; the sequences of transitions (make a staging, truncate, commit,
upload, conflict, refused, base gone, close, free) are here, so that the rooms above (files,
metadata, namespace, rename) call them by name.
``docs/write-path.md`` describes the states, who sets them, the locks and the crash windows.

Callers hold ``node.lock`` for every ``*_locked`` call (and for ``ensure_staging``).
"""
from __future__ import annotations

import errno
import functools
import logging
import stat
import time
import uuid

import trio

from ..envelope import format as fmt
from ..errors import (ArchivedError, FormatError, OssEncError, RejectedError,
                      WrongKeyError)
from ..aio import first_error
from ..objects import kept_headers
from ..store import ObjectInfo
from . import dirtystate, keymap, posix
from .attrs import Attrs, node_headers
from .context import META_DELAY, FsContext
from .freshness import Freshness
from .inodes import Entry, Node
from .reupload import Reupload
from .staging import Staging
from .uploader import BaseGoneError, UploadResult

log = logging.getLogger(__name__)

#: Local errors that may mend by themselves (space frees, a limit lifts): retried with backoff.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EINTR,
                               errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EBUSY})


def for_good(exc: BaseException) -> bool:
    """Whether an upload failure is one no retry mends, so retrying it would go on forever:
    OSS refused it (RejectedError, ArchivedError), the old version it builds on is torn or
    cannot be opened (FormatError, WrongKeyError), a local error other than a full disk
    (a staging file cut short: EIO), or a fault of ours (not an OSError at all). Network
    errors, 5xx and an unreachable KMS are retried (``fs.writeback``)."""
    if isinstance(exc, (RejectedError, ArchivedError, FormatError, WrongKeyError)):
        return True
    if isinstance(exc, OssEncError):
        return False
    if isinstance(exc, OSError):
        return exc.errno not in _TRANSIENT_ERRNOS
    return isinstance(exc, Exception)


class Lifecycle:
    def __init__(self, ctx: FsContext, attr: Attrs, fresh: Freshness) -> None:
        self.ctx = ctx
        self.attr = attr
        self.fresh = fresh

    async def ensure_staging(self, node: Node) -> Staging:
        """The staging a write goes into (``node.staging``; a new one, or a successor of a
        sealed or relayed one)."""
        st = node.staging
        if st is not None and st.relay:
            # new content replaces a pending metadata change: an ordinary staging on the
            # version the re-upload was of (an object carrying its key is still ours)
            node.staging = None
            await self.ctx.staging.drop(st)
            base = await self.fresh.source(node) if node.size > 0 else None
            size = base.size if base is not None else node.size
            node.staging = await self.ctx.staging.new(self.ctx.okey(node.path), size, base,
                                                  size, st.base_etag)
            node.staging.prior_keys = [k for k in [*st.prior_keys, st.wrapped_key] if k] \
                if st.sealed else list(st.prior_keys)
            return node.staging
        if st is not None and not st.sealed:
            return st
        if st is not None and not node.dirty and not st.complete and node.exists_remote:
            # it landed, but its untouched ranges were to come from the version it replaced:
            # build on the uploaded object instead of keeping those ranges locally
            node.staging = None
            await self.ctx.staging.drop(st)
            st = None
        if st is not None:
            # still dirty: the last attempt's fate is unknown, so build on what it built on
            # and remember its key; clean: it landed and is now the base
            base_etag = st.base_etag if node.dirty else (node.etag if node.exists_remote else None)
            node.staging = await self.ctx.staging.rekey(st, base_etag,
                                                    committed=node.dirty and st.committed,
                                                    unconfirmed=node.dirty)
        else:
            base = await self.fresh.source(node) if node.exists_remote and node.size > 0 else None
            # the base's plaintext size: an Encryption SDK object's differs from its stored one
            size = base.size if base is not None else node.size
            node.staging = await self.ctx.staging.new(self.ctx.okey(node.path), size, base,
                                                  size, node.etag)
        return node.staging

    async def truncate_locked(self, node: Node, size: int) -> None:
        if size == 0 and (node.staging is None or node.staging.sealed or node.staging.relay):
            old = node.staging
            base_etag = node.etag if node.exists_remote else None
            prior: list[str] = []
            if old is not None and node.dirty:    # its upload may have landed: still ours
                base_etag = old.base_etag
                prior = [k for k in [*old.prior_keys, old.wrapped_key] if k]
            if old is not None:               # no need to re-key what is thrown away
                node.staging = None
                await self.ctx.staging.drop(old)
            st = node.staging = await self.ctx.staging.new(self.ctx.okey(node.path), 0, None, 0,
                                                           base_etag)
            st.prior_keys = prior
        else:
            st = await self.ensure_staging(node)
            await st.truncate(size)
            if st.committed:                 # keep the journal's size in step with the data
                await st.save_manifest()
        st.changed = True
        dirtystate.mark_dirty(node)
        node.meta.mtime_ns = node.meta.ctime_ns = time.time_ns()

    async def commit_locked(self, node: Node, *, materialize: bool, durable: bool = True,
                            seal: bool = False) -> None:
        """The acknowledgement point: the staging and its journal entry are on disk, marked
        for replay; ``durable`` also fsyncs data, entry and directory (power cut safe).
        ``seal``: an upload follows; a small complete staging is sealed in this very entry,
        so that the upload needs no journal write of its own before sending.
        Raises OSError/OssEncError if they could not be written."""
        st = node.staging
        if st is None or not node.dirty or node.unlinked:
            return
        st.key = self.ctx.okey(node.path)
        headers = posix.to_headers(node.meta)
        if st.committed and not st.changed and st.posix == headers and \
                (st.synced or not durable) and (st.complete or not materialize):
            return
        dirtystate.commit(st)
        if materialize and not st.complete and \
                self.ctx.staging.used + st.base_missing() <= self.ctx.staging.limit:
            # fetch the untouched ranges now, while the old version surely exists, so the
            # journal entry does not depend on it later; offline, or when they do not fit
            # under the cache limit, they are fetched while uploading
            try:
                await st.materialize()
            except Exception as raw:         # network down, object gone, disk full
                exc = first_error(raw)
                log.warning("%s: untouched ranges not fetched yet (%s); they come from the "
                            "version opened (ETag %s) at upload time", self.ctx.where(node), exc,
                            st.base_etag)
        if seal and st.sealable:
            dirtystate.seal(st)
        acknowledged = st.entry_committed
        try:
            await st.save_manifest(headers, durable=durable)
        except BaseException:
            if not acknowledged:
                # no entry acknowledges it (a full cache disk): nothing to replay, and the
                # upload that follows must not need an entry either (Journal.write replaces
                # the entry atomically, so the one on disk is still the uncommitted one)
                st.entry_committed = False
                dirtystate.uncommit(st)
            raise
        st.changed = False

    async def journal_if_possible(self, node: Node, otherwise: str, *, durable: bool = True,
                                  seal: bool = False) -> None:
        """``commit_locked`` (materialize=False) where the file goes on without its entry when
        the journal cannot be written (a full cache disk): that is logged with what happens
        ``otherwise``, not raised."""
        try:
            await self.commit_locked(node, materialize=False, durable=durable, seal=seal)
        except (OSError, OssEncError) as exc:
            log.warning("%s: cannot journal (%s); %s", self.ctx.where(node), exc, otherwise)

    async def upload_locked(self, node: Node) -> None:
        """Send a dirty node's staging to the bucket (caller holds node.lock)."""
        st = node.staging
        if not node.dirty or st is None:
            return
        if node.unlinked:
            dirtystate.mark_clean(node)
            return
        st.key = self.ctx.okey(node.path)
        extra = posix.to_headers(node.meta)
        dirtystate.begin_upload(node)
        if self.ctx.writeback is not None:
            self.ctx.writeback.notify()             # the state file shows the upload
        try:
            result: UploadResult = await self.ctx.uploader.upload(st, extra)
        finally:
            dirtystate.end_upload(node)
            if self.ctx.writeback is not None:
                self.ctx.writeback.notify()
        dirtystate.mark_clean(node)
        # closed: the staging goes below, its entry with its data in one worker call
        drop = node.open_count == 0 and node.staging is st
        if st.committed:       # in the bucket now: nothing to replay (an old entry left by a
            dirtystate.uncommit(st)  # crash is sealed, and its replay finds its own upload)
            st.synced = False
            if not drop:
                await trio.to_thread.run_sync(
                    functools.partial(self.ctx.staging.journal.remove, st.ident, durable=False,
                                      entry_only=True))
        if result.conflict_key is not None or result.superseded:
            await self._after_conflict(node, st, result)
            return
        etag = result.etag
        if st.relay and node.kernel_etag == node.etag:
            node.kernel_etag = etag             # same bytes: the page cache stays valid
        node.etag = etag
        node.size = st.size
        node.exists_remote = True
        node.mtime = time.time()
        node.headers = {**(st.kept if isinstance(st, Reupload) else {}),
                        **{k.lower(): v for k, v in st.crypto_headers.items()}, **extra}
        node.headers_expires_mono = node.meta_expires_mono = time.monotonic() + self.ctx.ttl
        self.ctx.attr_cache.record(self.ctx.okey(node.path), etag, node.size, node.headers,
                               not_after=self.ctx.store.server_now())
        if not st.relay:
            node.kernel_etag = etag
        self.ctx.inodes.note_entry(node.parent_path, Entry(node.name, node.kind, node.size, etag,
                                                       node.mtime))
        if drop and node.staging is st:
            node.staging = None
            await self.ctx.staging.drop(st)

    async def _after_conflict(self, node: Node, st: Staging, result: UploadResult) -> None:
        """The local version went beside the object (or, for a metadata change, was dropped):
        show the other client's version at the name (fetched afresh) and the conflict copy
        next to it."""
        node.epoch += 1                      # open writers' version is gone from the name
        if result.conflict_key is not None:
            copy_name = keymap.name(result.conflict_key.rsplit("/", 1)[-1])
            self.ctx.inodes.note_entry(node.parent_path, Entry(copy_name, stat.S_IFREG, st.size,
                                                           result.etag, time.time()))
        if node.staging is st:
            node.staging = None
            await self.ctx.staging.drop(st)
        node.headers = None
        node.headers_expires_mono = 0
        node.kernel_etag = None
        node.symlink_target = None
        try:
            info = await self.ctx.store.head(self.ctx.okey(node.path))
        except OssEncError:
            info = None
        if info is not None:
            node.exists_remote = True
            node.etag = None                 # force _apply_file_info to take the new version
            self.attr.apply_file_info(node, info)
        elif result.superseded:              # deleted by another client: gone here too
            self.name_gone(node)
        else:
            node.exists_remote = False
            node.size = 0

    async def upload_or_queue(self, node: Node) -> None:
        """Upload now; on failure the entry is made durable and the queue retries it."""
        try:
            await self.upload_locked(node)
        except BaseGoneError as exc:
            await self._base_gone(node, exc)
            raise
        except BaseException as exc:
            if for_good(first_error(exc)):
                await self._refused(node, first_error(exc))
                raise
            if node.dirty and not node.unlinked and node.staging is not None:
                with trio.CancelScope(shield=True):
                    await self.journal_if_possible(node, "the retries send it from memory",
                                                   durable=True)
                if self.ctx.writeback is not None:
                    self.ctx.writeback.failed(node, exc)
            raise

    async def _refused(self, node: Node, exc: BaseException) -> None:
        """The upload failed for good (``for_good``: OSS refused it with a 4xx that no retry
        changes -- NotImplemented, a name it does not take, access denied, an archived base
        -- or a local fault no retry mends): it is not retried. The staging goes to
        quarantine with the reason (``ossencfs status`` lists it; nothing written is lost),
        the upload queue forgets it (unmount never waits for it), and the name shows what
        the bucket holds."""
        st = node.staging
        if st is None:
            return
        node.epoch += 1
        with trio.CancelScope(shield=True):
            if not st.relay:                 # its data and entry on disk before moving them
                await self.journal_if_possible(node, "quarantined as it is", durable=True)
            what = "metadata change" if st.relay else "upload"
            how = "refused by OSS" if isinstance(exc, (RejectedError, ArchivedError)) \
                else "failed for good"
            where = await self.ctx.staging.quarantine(st, f"{what} {how}: {exc}")
        log.error("%s: %s %s, not retried (%s); kept in %s", self.ctx.where(node), what, how,
                  exc, where)
        node.staging = None
        dirtystate.mark_clean(node)
        node.headers = None
        node.headers_expires_mono = node.meta_expires_mono = 0
        node.kernel_etag = None
        if self.ctx.writeback is not None:
            self.ctx.writeback.forget(node)
        if not node.exists_remote:           # the name never reached the bucket
            self.name_gone(node)

    async def drop_local_locked(self, node: Node, *, uncommitted_entry_too: bool) -> None:
        """``node``'s name went away here (unlink, renamed over): nothing local of it is
        uploaded or replayed any more. A closed file's staging is freed; an open one keeps its
        data for its readers and writers, but its journal entry goes (a committed one; with
        ``uncommitted_entry_too`` any)."""
        dirtystate.mark_clean(node)
        st = node.staging
        if st is not None and node.open_count == 0:
            node.staging = None               # the journal entry goes before we answer
            await self.ctx.staging.drop(st)
        elif st is not None and (st.committed or uncommitted_entry_too):
            await trio.to_thread.run_sync(functools.partial(
                self.ctx.staging.journal.remove, st.ident, durable=True))
            dirtystate.uncommit(st)
        if self.ctx.writeback is not None:
            self.ctx.writeback.forget(node)

    def name_gone(self, node: Node) -> None:
        """``node``'s name is gone from the bucket outside any namespace call (a refused
        upload, another client's delete): forget it here and in the kernel's entry cache."""
        self.ctx.inodes.drop_entry(node.parent_path, node.name)
        self.ctx.inodes.detach(node)
        parent = self.ctx.inodes.at(node.parent_path)
        if parent is not None:
            self.ctx.kernel_forget(parent.ino, node.name)

    async def _base_gone(self, node: Node, exc: Exception) -> None:
        """The untouched ranges of a partly rewritten file can no longer be fetched (another
        client replaced the object first and they were not cached): nothing sane can be
        uploaded, so the written ranges are kept aside, reported, and the name shows the
        other client's version."""
        st = node.staging
        if st is None:
            return
        node.epoch += 1
        where = await self.ctx.staging.quarantine(st, f"conflict: {exc}; the ranges written here are "
                                            f"kept (ciphertext) with this entry")
        log.error("%s: changed by another client before the local changes could be completed;"
                  " they are kept in %s", self.ctx.where(node), where)
        node.staging = None
        dirtystate.mark_clean(node)
        node.headers = None
        node.headers_expires_mono = 0
        node.kernel_etag = None
        if self.ctx.writeback is not None:
            self.ctx.writeback.forget(node)

    async def close_locked(self, node: Node) -> None:
        """close(2): write-back -> durable in the journal, upload later; else upload now."""
        if node.unlinked:
            dirtystate.mark_clean(node)    # nothing to keep: the last close frees the staging
        if not node.dirty:
            return
        if self.ctx.write_back > 0 and self.ctx.writeback is not None:
            try:
                await self.commit_locked(node, materialize=True, seal=True)
            except (OSError, OssEncError) as exc:
                # cannot journal (e.g. the cache disk is full): fall back to uploading now
                log.warning("%s: cannot journal (%s); uploading at close instead",
                            self.ctx.where(node), exc)
                await self.upload_or_queue(node)
                return
            self.ctx.writeback.schedule(node)
            return
        await self.upload_now(node)

    async def upload_now(self, node: Node) -> None:
        """close(2) without write-back, or fsync(2): returns once the object is in the bucket
        (caller holds node.lock; raises what ``upload_or_queue`` raises).

        The staging is journaled first (not fsynced), so that a crash during the upload
        replays it -- except a small new file that is still all in memory: it goes straight
        from memory, and only a failed upload journals it (``upload_or_queue``). Making its
        data file and entry and removing them again cost more than its PUT on a fast link,
        and a crash during that PUT loses only a file whose close or fsync had not returned,
        which no mode promises to keep (README, "What each mode guarantees")."""
        st = node.staging
        if st is not None and st.in_memory and st.sealable:
            await self.upload_or_queue(node)
            return
        await self.journal_if_possible(node, "uploading without it", durable=False, seal=True)
        await self.upload_or_queue(node)

    async def release_locked(self, node: Node) -> None:
        """The kernel's release of a file's last handle while it is still dirty (written
        after its last flush, or its close failed); caller holds node.lock. As a close,
        except for a file whose upload at close failed and is queued for retry (without
        write-back): sending it again here would fail the same way and report to nobody
        (release has no caller), and did so with the store's own retries. Its entry is
        brought up to date instead (fsynced) and the queue retries it with backoff."""
        wb = self.ctx.writeback
        job = wb.job_for(node) if wb is not None else None
        if self.ctx.write_back > 0 or job is None or not job.attempts:
            await self.close_locked(node)
            return
        await self.journal_if_possible(node, "the retries send it from memory", durable=True)

    async def upload_job(self, node: Node) -> None:
        """The queue's worker: upload one pending file, then free its staging if closed."""
        async with node.lock:
            if node.dirty and not node.unlinked and node.staging is not None \
                    and not node.staging.committed:
                # (raising here, every retry failed before reaching OSS on a full disk)
                await self.journal_if_possible(node, "uploading without it", seal=True)
            try:
                await self.upload_locked(node)
            except BaseGoneError as exc:
                await self._base_gone(node, exc)
            except Exception as raw:
                if not for_good(first_error(raw)):
                    raise
                await self._refused(node, first_error(raw))
            await self._drop_if_clean(node)

    async def _drop_if_clean(self, node: Node) -> None:
        if node.open_count == 0 and not node.dirty and node.staging is not None:
            old, node.staging = node.staging, None
            await self.ctx.staging.drop(old)
        if node.open_count == 0 and not node.dirty:
            if node.nlookup == 0 and node.exists_remote and not node.unlinked and \
                    self.ctx.spawn(functools.partial(self._release_later, node)):
                return
            self.ctx.inodes.release_check(node)

    async def _release_later(self, node: Node) -> None:
        """A node the kernel holds no reference to (a replayed file) stays known for a
        listing's lifetime after its upload: a listing fetched while the upload landed may
        lack the object, and without the node a lookup would believe that listing."""
        await trio.sleep(self.ctx.ttl)
        if node.open_count == 0 and not node.dirty:
            self.ctx.inodes.release_check(node)

    async def start_reupload(self, node: Node, info: ObjectInfo) -> None:
        """Make ``node`` dirty with a journaled ``Reupload`` of ``info``'s version."""
        kept = kept_headers(info.headers)
        crypto = {k: v for k, v in kept.items() if k not in fmt.strip_crypto_headers(kept)}
        st = Reupload(self.ctx.staging, uuid.uuid4().hex, info.key, info.size, info.etag,
                      info.object_type, kept, crypto)
        self.ctx.staging.active.add(st)
        node.headers = node_headers(info.headers)
        node.staging = st
        dirtystate.mark_dirty(node)
        await self.commit_locked(node, materialize=False, durable=False)
        if node.open_count == 0:
            self.reupload_later(node)

    def reupload_later(self, node: Node) -> None:
        if self.ctx.writeback is not None:
            self.ctx.writeback.schedule(node, max(self.ctx.write_back, META_DELAY))
