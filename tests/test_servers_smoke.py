import httpx

def test_registry_and_helm_repo_answer(registry, helm_repo):
    assert httpx.get(f"{registry.url}/v2/").status_code == 200
    put = httpx.put(f"{helm_repo.url}/x/index.yaml", content=b"apiVersion: v1\nentries: {}\n")
    assert put.status_code in (201, 204)
    assert httpx.get(f"{helm_repo.url}/x/index.yaml").text.startswith("apiVersion")
