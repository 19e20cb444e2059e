"""Harnesses shared by the test packages (imported as `tests.support.<module>`).

ports          free_port(): a free loopback port for a real server
commands       candidates_command(...): the `candidates` CLI as a subprocess argv
service        Service: `candidates serve` in a subprocess with its log in a file;
               running_app(settings): the FastAPI app under uvicorn in a thread, as an httpx client
redis_server   redis_server(workdir): a throw-away real redis-server
model_factory  a small real SavedModel and model directory, built in seconds without training
"""
