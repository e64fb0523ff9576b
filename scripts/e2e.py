#!/usr/bin/env python3
"""End-to-end test of the demo in a real headless browser.

Starts a redis-server and the Demo executable (two nodes) on free loopback
ports, opens the page of each node in its own headless Chromium session, and
has two users on different nodes exchange messages through the page's own
controls. Then presses Ctrl-C (SIGINT) on the demo and checks that both pages
saw their socket close with 1001 and that no relation is left in Redis.
Screenshots go to artifacts/.

With --redis-cluster, the same test runs on a Redis Cluster of 3 masters and
3 replicas (sharded pub/sub) started on free loopback ports.
"""
import os
import signal
import socket
import subprocess
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "artifacts")
DEMO = os.environ.get("DEMO_BINARY", os.path.join(ROOT, ".build", "debug", "Demo"))
results = []


def check(name, condition, detail=""):
    results.append((name, bool(condition)))
    print(("PASS " if condition else "FAIL ") + name + ("" if condition else f": {detail}"), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser():
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def connect(driver, url, uid):
    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "this-node").text not in ("", "…"))
    driver.find_element(By.ID, "uid").send_keys(uid)
    driver.find_element(By.ID, "connect").click()
    WebDriverWait(driver, 10).until(EC.text_to_be_present_in_element((By.ID, "status-text"), "connected as " + uid))


def send(driver, to, text, binary=False):
    if binary:
        driver.find_element(By.CSS_SELECTOR, "input[name=opcode][value=binary]").click()
    field = driver.find_element(By.ID, "text")
    field.clear()
    field.send_keys(text)
    recipients = driver.find_element(By.ID, "to")
    recipients.clear()
    recipients.send_keys(to)
    driver.find_element(By.ID, "send").click()


def received(driver, text, kind, timeout=10):
    def found(d):
        for item in d.find_elements(By.CSS_SELECTOR, "#messages li.msg." + kind):
            if text in item.text:
                return item.text
        return False
    try:
        return WebDriverWait(driver, timeout).until(found)
    except Exception:
        return None


def shows(driver, element, text, timeout):
    """Whether element `element` shows `text` within `timeout` seconds."""
    try:
        WebDriverWait(driver, timeout).until(EC.text_to_be_present_in_element((By.ID, element), text))
        return True
    except Exception:
        return False


def cluster_port():
    """A free port whose cluster-bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                pass


def start_redis(cluster, workdir):
    """One redis-server, or six joined into a 3+3 cluster; returns (processes, ports, url)."""
    base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if not cluster:
        port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(port)] + base, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        return [redis], [port], f"redis://127.0.0.1:{port}"
    ports = [cluster_port() for _ in range(6)]
    processes = [subprocess.Popen(["redis-server", "--port", str(p), "--cluster-enabled", "yes", "--dir", workdir,
                                   "--cluster-config-file", f"nodes-{p}.conf", "--cluster-node-timeout", "2000"] + base,
                                  stdout=subprocess.DEVNULL) for p in ports]
    time.sleep(0.5)
    subprocess.run(["redis-cli", "--cluster", "create"] + [f"127.0.0.1:{p}" for p in ports]
                   + ["--cluster-replicas", "1", "--cluster-yes"], capture_output=True, check=True)
    for _ in range(100):
        if all("cluster_state:ok" in subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"],
                                                    capture_output=True, text=True).stdout for p in ports):
            break
        time.sleep(0.2)
    return processes, ports, "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    if not os.path.exists(DEMO):
        print(f"FAIL: demo binary not found at {DEMO} (run `swift build --product Demo`)")
        return 1
    cluster = "--redis-cluster" in sys.argv
    if cluster:
        print("(on a Redis Cluster: 3 masters + 3 replicas)")
    import tempfile
    workdir = tempfile.mkdtemp(prefix="clusterws-e2e-")
    redis_processes, redis_ports, redis_url = start_redis(cluster, workdir)
    port1, port2 = free_port(), free_port()
    env = dict(os.environ, REDIS_URL=redis_url)
    demo = subprocess.Popen([DEMO, "--node", f"server1={port1}", "--node", f"server2={port2}", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, text=True)
    alice = bob = None
    try:
        ready = [demo.stdout.readline() for _ in range(3)]
        check("demo prints the URLs to open", any(f":{port1}/" in line for line in ready), ready)

        alice, bob = browser(), browser()
        connect(alice, f"http://127.0.0.1:{port1}/", "alice")
        connect(bob, f"http://127.0.0.1:{port2}/", "bob")
        check("pages show which node served them",
              alice.find_element(By.ID, "this-node").text == "server1" and bob.find_element(By.ID, "this-node").text == "server2")

        send(alice, "bob", "hello bob, this is alice on server1")
        got = received(bob, "hello bob, this is alice on server1", "text")
        check("bob on server2 receives alice's text message", got, "not shown on bob's page")
        check("the message says where it came from", got and "from alice via server1" in got and "received on server2" in got, got)

        send(bob, "alice", "hi alice, binary from server2", binary=True)
        got = received(alice, "hi alice, binary from server2", "binary")
        check("alice on server1 receives bob's binary message", got, "not shown on alice's page")

        # Recovery (clusterws.v1 through /clusterws.js): bob's connection drops for 3 s, alice sends
        # two messages meanwhile; bob's page reconnects, gets them replayed, and says so.
        got = received(bob, "hello bob, this is alice on server1", "text")
        check("messages to a user carry their offset", got and "#1" in got, got)
        bob.find_element(By.ID, "drop").click()
        check("bob's connection drops", shows(bob, "status-text", "closed (4000", 5), bob.find_element(By.ID, "status-text").text)
        send(alice, "bob", "sent while bob was away (1)")
        send(alice, "bob", "sent while bob was away (2)")
        check("bob's page reconnects and shows the recovered badge",
              shows(bob, "recovery", "recovered · 2 missed messages replayed", 15), bob.find_element(By.ID, "recovery").text)
        first, second = received(bob, "sent while bob was away (1)", "text"), received(bob, "sent while bob was away (2)", "text")
        check("the missed messages are replayed, in order, with their offsets",
              first and second and "#2" in first and "#3" in second, [first, second])

        def online(d):
            text = d.find_element(By.ID, "online").text
            return "alice" in text and "bob" in text and "server1" in text and "server2" in text
        try:
            WebDriverWait(alice, 10).until(online)
            check("the online list shows both users and their nodes", True)
        except Exception:
            check("the online list shows both users and their nodes", False, alice.find_element(By.ID, "online").text)

        # Presence: both join "lobby"; each page lists both members (read at join, kept live by
        # the presence frames), and the joins show as they happen.
        for d in (alice, bob):
            d.find_element(By.ID, "room").clear()
            d.find_element(By.ID, "room").send_keys("lobby")
            d.find_element(By.ID, "join").click()
        check("the room's member list shows both users, from both nodes",
              shows(alice, "members", "bob", 10) and shows(alice, "members", "alice", 1) and shows(bob, "members", "alice", 10),
              [alice.find_element(By.ID, "members").text, bob.find_element(By.ID, "members").text])

        import json
        import urllib.request
        import urllib.error
        # The HTTP publish API, as curl would use it (the demo's key), through server1 to bob on server2.
        request = urllib.request.Request(f"http://127.0.0.1:{port1}/api/publish", method="POST",
                                         data=json.dumps({"uid": "bob", "text": "from a backend over HTTP"}).encode(),
                                         headers={"Authorization": "Bearer demo-key", "Content-Type": "application/json"})
        answer = json.load(urllib.request.urlopen(request))
        check("POST /api/publish answers how many nodes it reached", answer.get("reached") == 1, answer)
        check("bob's page shows the message published over HTTP", received(bob, "from a backend over HTTP", "text"),
              "not shown on bob's page")
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port1}/api/publish", method="POST",
                                                          data=b'{"uid":"bob","text":"x"}'))
            refused = None
        except urllib.error.HTTPError as error:
            refused = error.code
        check("the publish API refuses a request without a key (401)", refused == 401, refused)
        presence = json.load(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port2}/api/presence?room=lobby", headers={"Authorization": "Bearer demo-key"})))
        check("GET /api/presence lists the room's members", sorted(m["uid"] for m in presence.get("members", [])) == ["alice", "bob"],
              presence)
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port1}/health"))
        check("/health reports Redis up", health.get("redis") == "up" and health.get("status") == "ok", health)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port2}/metrics").read().decode()
        check("/metrics exposes the node's counters (Prometheus text)",
              "clusterws_messages_out_total" in metrics and "clusterws_deliveries_total" in metrics
              and "clusterws_messages_in_total" in metrics and 'node="server2"' in metrics, metrics[:300])

        suffix = "-cluster" if cluster else ""
        alice.save_screenshot(os.path.join(ARTIFACTS, f"e2e-alice{suffix}.png"))
        bob.save_screenshot(os.path.join(ARTIFACTS, f"e2e-bob{suffix}.png"))

        demo.send_signal(signal.SIGINT)
        code = demo.wait(timeout=20)
        check("Ctrl-C stops the demo cleanly", code == 0, f"exit code {code}")
        for name, driver in (("alice", alice), ("bob", bob)):
            try:
                WebDriverWait(driver, 10).until(EC.text_to_be_present_in_element((By.ID, "status-text"), "closed (1001"))
                check(f"{name}'s socket was closed with 1001", True)
            except Exception:
                check(f"{name}'s socket was closed with 1001", False, driver.find_element(By.ID, "status-text").text)
        def role(redis_port):
            out = subprocess.run(["redis-cli", "-p", str(redis_port), "ROLE"], capture_output=True, text=True).stdout
            return out.split()[0] if out.split() else "unknown"
        def leftovers(ports):
            found = []
            for redis_port in ports:
                for pattern in ("clusterws-demo:*relate*", "clusterws-demo:alive:*"):
                    found += [f"{key} (port {redis_port})" for key in subprocess.run(
                        ["redis-cli", "-p", str(redis_port), "--scan", "--pattern", pattern],
                        capture_output=True, text=True).stdout.split()]
            return found
        # The masters hold the data of record: nothing may be left there. A replica applies the
        # masters' deletions a moment later (one still finishing its first sync of a fresh cluster
        # may take seconds): it gets 10 s to converge, and is reported apart.
        masters = [p for p in redis_ports if role(p) == "master"]
        replicas = [p for p in redis_ports if p not in masters]
        deadline = time.time() + 3
        left = leftovers(masters)
        while left and time.time() < deadline:
            time.sleep(0.1)
            left = leftovers(masters)
        check("no relation or heartbeat is left in Redis after Ctrl-C", not left, left)
        if replicas:
            # Informational: seen once in five runs, a replica of a fresh cluster kept a key of a slot
            # its master does not own (its link up and caught up; the key's slot MOVED elsewhere) — a
            # replica that changed masters while the cluster settled and kept old data. Not ClusterWS's
            # state of record, so it is printed, not failed.
            stale = leftovers(replicas)
            deadline = time.time() + 5
            while stale and time.time() < deadline:
                time.sleep(0.2)
                stale = leftovers(replicas)
            for entry in stale:
                key, port = entry.split(" (port ")[0], entry.split("(port ")[1].rstrip(")")
                info = subprocess.run(["redis-cli", "-p", port, "info", "replication"], capture_output=True, text=True).stdout
                where = subprocess.run(["redis-cli", "-p", port, "ttl", key], capture_output=True, text=True).stdout.strip()
                link = " ".join(l for l in info.splitlines() if l.startswith(("master_port", "master_link", "slave_repl_offset")))
                print(f"NOTE a replica still holds {entry}: {where}; {link}")
        bob.save_screenshot(os.path.join(ARTIFACTS, "e2e-after-shutdown.png"))
    finally:
        for driver in (alice, bob):
            if driver:
                driver.quit()
        if demo.poll() is None:
            demo.kill()
        for process in redis_processes:
            process.kill()

    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
