"""Minimal libpq over ctypes for scripted concurrent sessions (spike only)."""
import ctypes, os
L = ctypes.CDLL("libpq.so.5")
L.PQconnectdb.restype = ctypes.c_void_p; L.PQconnectdb.argtypes = [ctypes.c_char_p]
L.PQstatus.argtypes = [ctypes.c_void_p]
L.PQerrorMessage.restype = ctypes.c_char_p; L.PQerrorMessage.argtypes = [ctypes.c_void_p]
L.PQexec.restype = ctypes.c_void_p; L.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
L.PQsendQuery.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
L.PQgetResult.restype = ctypes.c_void_p; L.PQgetResult.argtypes = [ctypes.c_void_p]
L.PQresultStatus.argtypes = [ctypes.c_void_p]
L.PQresultErrorMessage.restype = ctypes.c_char_p; L.PQresultErrorMessage.argtypes = [ctypes.c_void_p]
L.PQntuples.argtypes = [ctypes.c_void_p]; L.PQnfields.argtypes = [ctypes.c_void_p]
L.PQgetvalue.restype = ctypes.c_char_p; L.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
L.PQgetisnull.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
L.PQclear.argtypes = [ctypes.c_void_p]; L.PQfinish.argtypes = [ctypes.c_void_p]
L.PQconsumeInput.argtypes = [ctypes.c_void_p]; L.PQisBusy.argtypes = [ctypes.c_void_p]

def conninfo():
    env = dict(l.split("=", 1) for l in open("/tmp/pgspike/env").read().split("\n")[0][7:].split())
    return f"host={env['PGHOST']} port={env['PGPORT']} dbname=maskloss user=postgres"

class Conn:
    def __init__(self, ci=None):
        self.c = L.PQconnectdb((ci or conninfo()).encode())
        if L.PQstatus(self.c) != 0:
            raise RuntimeError(L.PQerrorMessage(self.c).decode())
    def _rows(self, r):
        st = L.PQresultStatus(r)
        if st not in (1, 2):  # COMMAND_OK, TUPLES_OK
            msg = L.PQresultErrorMessage(r).decode(); L.PQclear(r); raise RuntimeError(msg.strip())
        rows = [tuple(None if L.PQgetisnull(r, i, j) else L.PQgetvalue(r, i, j).decode()
                      for j in range(L.PQnfields(r))) for i in range(L.PQntuples(r))]
        L.PQclear(r); return rows
    def q(self, sql):
        return self._rows(L.PQexec(self.c, sql.encode()))
    def send(self, sql):  # asynchronous: returns at once; finish() later
        assert L.PQsendQuery(self.c, sql.encode()) == 1, L.PQerrorMessage(self.c)
    def busy(self):
        L.PQconsumeInput(self.c); return L.PQisBusy(self.c) == 1
    def finish(self):
        out, err = [], None
        while True:
            r = L.PQgetResult(self.c)
            if not r: break
            try: out = self._rows(r)
            except RuntimeError as e: err = e
        if err: raise err
        return out
    def close(self): L.PQfinish(self.c)
