"""A stand-in for the Hugging Face Hub on loopback: the HTTP endpoints huggingface_hub's real
upload code calls (whoami, repo and branch creation, preupload, tree listing, commit), storing
what it receives as plain folders so tests can read the pushed files back."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

from aiohttp import web
from servers import Background

TOKEN = "hf_standin_TOKEN_d41d8cd98f00b204"


class HubStandIn:
    def __init__(self, root: Path):
        self.root = root
        self.calls: list[str] = []
        self.validated: list[str] = []
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/api/whoami-v2", self.whoami)
        app.router.add_post("/api/validate-yaml", self.validate_yaml)
        app.router.add_post("/api/repos/create", self.create_repo)
        app.router.add_post("/api/{kind}s/{ns}/{name}/branch/{branch:.+}", self.create_branch)
        app.router.add_post("/api/{kind}s/{ns}/{name}/preupload/{rev:.+}", self.preupload)
        app.router.add_post("/api/{kind}s/{ns}/{name}/commit/{rev:.+}", self.commit)
        app.router.add_get("/api/{kind}s/{ns}/{name}/tree/{rev}", self.tree)
        app.router.add_get("/api/{kind}s/{ns}/{name}/tree/{rev}/{path:.*}", self.tree)
        self.server = Background(app)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def close(self) -> None:
        self.server.close()

    def repo_dir(self, kind: str, repo: str, revision: str = "main") -> Path:
        return self.root / kind / repo / revision

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def whoami(self, request: web.Request) -> web.Response:
        self.calls.append("whoami")
        if not self._authorized(request):
            return web.json_response(
                {"error": "Invalid credentials in Authorization header"}, status=401
            )
        return web.json_response(
            {
                "type": "user",
                "name": "tester",
                "fullname": "Test User",
                "orgs": [],
                "auth": {"type": "access_token"},
            }
        )

    async def validate_yaml(self, request: web.Request) -> web.Response:
        """The checks the Hub makes of card metadata that our cards use."""
        import yaml

        body = await request.json()
        self.validated.append(body["repoType"])
        text = body["content"]
        errors = []
        if not text.startswith("---\n"):
            errors.append("no YAML front matter")
        else:
            meta = yaml.safe_load(text.split("---\n")[1])
            if not isinstance(meta, dict):
                errors.append("metadata is not a mapping")
            else:
                for key in ("tags", "datasets", "task_categories"):
                    if key in meta and not (
                        isinstance(meta[key], list) and all(isinstance(t, str) for t in meta[key])
                    ):
                        errors.append(f"{key} must be a list of strings")
                if "license" in meta and not isinstance(meta["license"], str):
                    errors.append("license must be a string")
                for cfg in meta.get("configs", []):
                    if (
                        not isinstance(cfg, dict)
                        or "config_name" not in cfg
                        or "data_files" not in cfg
                    ):
                        errors.append("configs entries need config_name and data_files")
        if errors:
            return web.json_response({"errors": [{"message": e} for e in errors]}, status=400)
        return web.json_response({"errors": [], "warnings": []})

    async def create_repo(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        kind = body.get("type") or "model"
        repo = f"{body.get('organization') or 'tester'}/{body['name']}"
        private = (
            body.get("visibility") == "private"
            if "visibility" in body
            else bool(body.get("private"))
        )
        self.calls.append(f"create_repo {kind} {repo} private={private}")
        self.repo_dir(kind, repo).mkdir(parents=True, exist_ok=True)
        return web.json_response({"url": f"{self.endpoint}/{repo}", "name": repo})

    async def create_branch(self, request: web.Request) -> web.Response:
        kind, repo, branch = (
            request.match_info["kind"],
            f"{request.match_info['ns']}/{request.match_info['name']}",
            request.match_info["branch"],
        )
        self.calls.append(f"create_branch {kind} {repo} {branch}")
        target = self.repo_dir(kind, repo, branch)
        if not target.exists():
            shutil.copytree(self.repo_dir(kind, repo), target)
        return web.json_response({})

    async def preupload(self, request: web.Request) -> web.Response:
        body = await request.json()
        # every file as a regular git blob: the commit carries the content, no LFS/xet round trip
        return web.json_response(
            {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in body["files"]
                ]
            }
        )

    async def tree(self, request: web.Request) -> web.Response:
        kind, repo = (
            request.match_info["kind"],
            f"{request.match_info['ns']}/{request.match_info['name']}",
        )
        base = self.repo_dir(kind, repo, request.match_info["rev"])
        entries = []
        for p in sorted(base.rglob("*")) if base.exists() else []:
            rel = p.relative_to(base).as_posix()
            if p.is_file():
                entries.append(
                    {
                        "type": "file",
                        "path": rel,
                        "size": p.stat().st_size,
                        "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                    }
                )
            else:
                entries.append({"type": "directory", "path": rel, "oid": "0" * 40})
        return web.json_response(entries)

    async def commit(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        kind, repo, rev = (
            request.match_info["kind"],
            f"{request.match_info['ns']}/{request.match_info['name']}",
            request.match_info["rev"],
        )
        base = self.repo_dir(kind, repo, rev)
        base.mkdir(parents=True, exist_ok=True)
        changed = []
        for line in (await request.read()).splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                path = base / value["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(base64.b64decode(value["content"]))
                changed.append(value["path"])
            elif key == "deletedFile":
                (base / value["path"]).unlink(missing_ok=True)
            elif key == "deletedFolder":
                shutil.rmtree(base / value["path"], ignore_errors=True)
            elif key != "header":
                return web.json_response(
                    {"error": f"unsupported commit operation {key}"}, status=400
                )
        self.calls.append(f"commit {kind} {repo}@{rev} {len(changed)} files")
        oid = hashlib.sha1(json.dumps(sorted(changed)).encode()).hexdigest()
        return web.json_response(
            {
                "commitUrl": f"{self.endpoint}/{repo}/commit/{oid}",
                "commitOid": oid,
                "pullRequestUrl": None,
            }
        )
