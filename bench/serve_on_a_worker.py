"""``adaptlab serve`` as it ran before commit 7934e07: HTTP (uvicorn) on the main thread and each
base's batches on a worker thread of its own, for the "before" rows of
``bench/serving_llamacpp_http.py --weights auto,auto@worker`` (the same server otherwise, in the
same run). Not a way to serve: ``adaptlab serve`` works its batches on the main thread.

    python bench/serve_on_a_worker.py serve --model gemma-3-270m ...   # adaptlab's serve options
"""

import adaptlab.cli as cli


def _on_worker_threads(service, server) -> None:
    for lane in service.lanes:
        lane.start()
    try:
        server.run()
    finally:
        service.close()


cli._serve_on_this_thread = _on_worker_threads
if __name__ == "__main__":
    cli.main()
