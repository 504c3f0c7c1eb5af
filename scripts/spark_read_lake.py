"""Reads every table of a local lake with Spark, as a Spark user would, and prints what Spark makes of it.

Spark is not a dependency of the project (pyspark is ~400 MB and needs Java 17+): run this from a venv of its own.

    python3 -m venv /tmp/spark && /tmp/spark/bin/pip install pyspark==4.3.0
    /tmp/spark/bin/python scripts/spark_read_lake.py data/lake

For each table's folder: ``spark.read.parquet`` (partition discovery), the same with ``mergeSchema``, and a
``CREATE TABLE … USING parquet LOCATION`` with ``MSCK REPAIR TABLE``; each line gives the rows read and the
columns' Spark types, or the error. ``drift_report``'s folders also hold ``_report.html`` and ``_summary.json``,
which Spark skips (a lake written before 2026-12-01 has them as ``report.html`` and ``summary.json``, which it
refuses until renamed: docs/operations.md, "Upgrading"). Spark keeps its tables' catalog in ``.spark-warehouse/``
beside the lake (remove it after). What was found is in docs/operations.md, "Reading the lake".
"""

import sys
from pathlib import Path

from pyspark.sql import SparkSession


def first_line(error: Exception) -> str:
    """The error's first line; of a Java one (Py4JJavaError), the Java exception's, which names the file."""
    java = getattr(error, "java_exception", None)
    lines = (java.toString() if java is not None else str(error)).strip().splitlines()
    return lines[0][:240] if lines else type(error).__name__


def schema(frame) -> str:
    return ", ".join(f"{f.name}:{f.dataType.simpleString()}" for f in frame.schema.fields)


def read_table(spark: SparkSession, name: str, folder: Path) -> None:
    print(f"== {name}")
    for options in ({}, {"mergeSchema": "true"}):
        try:
            frame = spark.read.options(**options).parquet(str(folder))
            print(f"  read {options or ''}: {frame.count()} rows; {schema(frame)}")
        except Exception as error:  # noqa: BLE001 - what Spark says is the finding
            print(f"  read {options or ''}: FAILED {first_line(error)}")
    table = f"lake_{name}"
    try:
        spark.sql(f"DROP TABLE IF EXISTS {table}")
        spark.sql(f"CREATE TABLE {table} USING parquet LOCATION '{folder}'")
        spark.sql(f"MSCK REPAIR TABLE {table}")
        print(f"  CREATE TABLE + MSCK REPAIR TABLE: {spark.table(table).count()} rows")
    except Exception as error:  # noqa: BLE001
        print(f"  CREATE TABLE + MSCK REPAIR TABLE: FAILED {first_line(error)}")


def main(lake: str) -> None:
    root = Path(lake).resolve()
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(root.parent / ".spark-warehouse"))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("OFF")
    print(f"Spark {spark.version} on {root}")
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "model"):
        read_table(spark, folder.name, folder)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/lake")
