"""Python steps of the code-review-pipeline example."""


def lint(context):
    repo = context.input["repo"]
    print(f"linting {repo}")
    return {"warnings": 0, "files": int(context.steps["fetch"]["outputs"].get("files", 0))}


def verdict(context):
    lint = context.steps["lint"]["outputs"]
    tests = context.steps["test"]["outputs"]
    ok = lint["warnings"] == 0 and int(tests.get("passed", 0)) > 0
    print(f"PR #{context.input['pr']}: {'approve' if ok else 'request changes'}")
    return {"verdict": "approve" if ok else "request_changes"}
