// Where the browser client keeps what it knows of each account (the audit position it
// verified, the key that tags names): IndexedDB by default. A page may pass any object with
// the same two methods instead.
//
//   get(key)        -> Promise<string | null>
//   put(key, value) -> Promise<void>

export function indexedDbStore(name) {
  const dbName = name || "keyserver-client";
  const open = () =>
    new Promise((resolve, reject) => {
      const req = indexedDB.open(dbName, 1);
      req.onupgradeneeded = () => req.result.createObjectStore("state");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  const run = async (mode, f) => {
    const db = await open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction("state", mode);
      const req = f(tx.objectStore("state"));
      tx.oncomplete = () => {
        db.close();
        resolve(req.result);
      };
      tx.onerror = tx.onabort = () => {
        db.close();
        reject(tx.error);
      };
    });
  };
  return {
    get: (key) => run("readonly", (s) => s.get(key)).then((v) => (v === undefined ? null : v)),
    put: (key, value) => run("readwrite", (s) => s.put(value, key)).then(() => undefined),
  };
}

// Runs f (which returns a Promise) holding the lock `name` across this origin's tabs and
// workers (the Web Locks API), so that reading, merging and writing an account's state is
// never interleaved with another's. Without the API (an old browser), f runs unlocked.
export function withLock(name, f) {
  const locks = globalThis.navigator && globalThis.navigator.locks;
  return locks ? locks.request(name, () => f()) : f();
}
