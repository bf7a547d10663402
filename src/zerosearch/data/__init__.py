"""The data the method learns from and is tested on: the QA record and its readers (`qa`), the built-in
synthetic search world (`world`), and the search plans a question becomes (`query_plans`).

`from zerosearch.data import load_qa, QARecord` keeps working: the QA schema is re-exported here.
"""

from zerosearch.data.qa import (ANSWER_SPLIT, DataError, QARecord, ReadReport, data_hash, json_problem, load_qa,
                                read_qa, record_from_row, resolve_qa, subsample, write_qa)

__all__ = ["ANSWER_SPLIT", "DataError", "QARecord", "ReadReport", "data_hash", "json_problem", "load_qa", "read_qa",
           "record_from_row", "resolve_qa", "subsample", "write_qa"]
