"""The wire contract: events, their codec and schemas, subjects, ids, vector clocks."""
