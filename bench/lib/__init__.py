"""What the benches share, one job a module:

- processes: the open-file limit, the Hypercorn worker and its server, killing what a bench started,
  the watchdog that ends a hung run;
- procfs: a process's CPU, memory and open files, and the listen-queue drops, from /proc;
- fakes: the fake model server in a process of its own (the default) or in a thread;
- sampling: a thread that samples the app's memory and open streams while the load runs;
- table: percentiles and the printed figures (a table, and one `JSON {...}` line);
- page: the composer form's action and CSRF token, read off a page by a load client;
- options: the command-line options load.py and direct.py share;
- database: the app's database for a run, SQLite or a throwaway PostgreSQL server, and that
  server's CPU;
- runs: another bench run as a subprocess, read by its `JSON {...}` line.
"""
