"""Write cnn_dailymail_demo.jsonl: a small CNN-DailyMail-format set written for this project.

Same columns as the CNN-DailyMail 3.0.0 validation split (id, article, highlights), so
processcnndm.py and main.py run offline on a fresh machine. The articles are invented local news,
generated from the templates below with made-up towns, people and figures; each article's
highlights restate its main facts in two or three sentences, as the real set's do.

    python assets/cnndm_demo/make_demo.py   # rewrites the file next to this one
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "cnn_dailymail_demo.jsonl"
SEED = 2026
PER_TEMPLATE = 4

TOWNS = ["Ashford Creek", "Belmont Hollow", "Carrow Bay", "Dunmore Falls", "Elmstead", "Fenwick Ridge",
         "Glenharbor", "Hollins Point", "Ivybridge Vale", "Juniper Flats", "Kestrel Mills", "Larkspur"]
FIRST = ["Maria", "James", "Priya", "Tomas", "Aisha", "Daniel", "Keiko", "Samuel", "Elena", "Oliver",
         "Fatima", "Lucas", "Hannah", "Mateo", "Grace", "Noah"]
LAST = ["Okafor", "Lindqvist", "Ramirez", "Chen", "Abernathy", "Novak", "Haddad", "Fitzgerald", "Moreau",
        "Tanaka", "Brennan", "Kowalski", "Osei", "Petrov", "Whitfield", "Santos"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def council_bridge(rng):
    town, mayor, cost, months, year = rng.choice(TOWNS), person(rng), rng.randint(3, 19), rng.randint(6, 20), \
        rng.randint(1931, 1968)
    day = rng.choice(WEEKDAYS)
    article = (
        f"The town council of {town} voted on {day} to replace the old river bridge, which has carried traffic "
        f"into the town centre since {year}. The new bridge will cost {cost} million dollars and is expected to "
        f"take {months} months to build. Mayor {mayor} said the decision had been delayed for years. \"Every "
        f"winter we close it for repairs, and every winter the shops on Main Street lose customers,\" "
        f"{mayor.split()[0]} said. Engineers found cracks in two of the bridge's supports during an inspection "
        f"last spring. While the work goes on, drivers will use a temporary crossing a mile downstream, and a "
        f"free shuttle bus will run every twenty minutes. Some residents asked the council to keep part of the "
        f"old stone arch as a footpath. The council agreed to study the idea and report back next month.")
    highlights = (f"{town} council votes to replace its {year} river bridge at a cost of {cost} million dollars.\n"
                  f"Work is expected to take {months} months; a temporary crossing and free shuttle will be used.\n"
                  f"Engineers found cracks in two supports during an inspection last spring.")
    return article, highlights


def bakery_award(rng):
    town, owner, rank, entrants, years = rng.choice(TOWNS), person(rng), rng.choice(["first", "second"]), \
        rng.randint(40, 160), rng.randint(3, 30)
    bread = rng.choice(["sourdough rye", "walnut loaf", "olive focaccia", "honey oat bread", "seeded spelt loaf"])
    article = (
        f"A small bakery in {town} has won {rank} prize at the national bread championship, beating {entrants} "
        f"other entries. Owner {owner}, who opened the shop {years} years ago, entered a {bread} made with flour "
        f"from a mill twelve miles away. \"I almost did not send it in,\" {owner.split()[0]} said. \"We bake three "
        f"hundred loaves a day and I thought, who has time for competitions?\" The judges praised the crust and "
        f"the even crumb of the loaf. Since the result was announced, the bakery has had queues outside before "
        f"it opens at seven in the morning. {owner.split()[0]} plans to hire two more bakers and to start "
        f"weekend baking classes for children in the autumn.")
    highlights = (f"A {town} bakery wins {rank} prize at the national bread championship with its {bread}.\n"
                  f"Owner {owner} beat {entrants} other entries and now plans to hire two more bakers.")
    return article, highlights


def storm(rng):
    town, chief, homes, speed, hours = rng.choice(TOWNS), person(rng), rng.randint(800, 9000), \
        rng.randint(60, 120), rng.randint(6, 48)
    article = (
        f"A storm with winds of up to {speed} miles per hour swept through {town} overnight, bringing down trees "
        f"and power lines across the area. About {homes:,} homes were left without electricity, and the power "
        f"company said some may not be reconnected for {hours} hours. Fire chief {chief} said crews answered more "
        f"than ninety calls, most of them about fallen trees blocking roads. No one was seriously hurt. Two "
        f"schools stayed closed on Tuesday while workers cleared their grounds. The town opened its community "
        f"hall as a warming centre, with hot drinks and phone charging for anyone who needs them. Forecasters "
        f"expect calmer weather for the rest of the week, though heavy rain could return on Sunday.")
    highlights = (f"Winds of up to {speed} mph hit {town}, leaving about {homes:,} homes without power.\n"
                  f"Some homes may wait {hours} hours to be reconnected; no one was seriously hurt.\n"
                  f"The community hall is open as a warming centre.")
    return article, highlights


def library(rng):
    town, librarian, books, cost, rooms = rng.choice(TOWNS), person(rng), rng.randint(20, 90), \
        rng.randint(2, 12), rng.randint(3, 8)
    article = (
        f"{town} opened its new public library on Saturday, five years after the old building was damaged by a "
        f"flood. The two-storey library holds {books},000 books and has {rooms} study rooms that anyone can book "
        f"for free. It cost {cost} million dollars, most of it raised by local families and businesses. Head "
        f"librarian {librarian} said more than a thousand people came through the doors on the first day. "
        f"\"Children were sitting on the floor reading before we had even cut the ribbon,\" "
        f"{librarian.split()[0]} said. The building also has a small cafe, a room for recording music and a "
        f"garden on the roof. The library will stay open until nine in the evening on weekdays, two hours later "
        f"than the old one.")
    highlights = (f"{town} opens a new public library five years after a flood damaged the old one.\n"
                  f"The {cost} million dollar building holds {books},000 books and has {rooms} free study rooms.\n"
                  f"More than a thousand people visited on the first day.")
    return article, highlights


def marathon(rng):
    town, winner, minutes, runners, age = rng.choice(TOWNS), person(rng), rng.randint(8, 40), \
        rng.randint(900, 6000), rng.randint(19, 58)
    article = (
        f"{winner}, a {age}-year-old teacher, won the {town} marathon on Sunday in two hours and {minutes} "
        f"minutes, the fastest time in the race's history. More than {runners:,} runners took part, a record "
        f"for the event. {winner.split()[0]} said the cool morning helped. \"I kept waiting for my legs to give "
        f"up, and they never did,\" {winner.split()[0]} said after crossing the line. The race raised money for "
        f"the town's hospital, which hopes to buy a new scanner. Volunteers handed out water at fourteen "
        f"stations along the course, and a brass band played at the halfway point. Organisers said next year's "
        f"race will add a shorter route for families.")
    highlights = (f"Teacher {winner}, {age}, wins the {town} marathon in a record two hours {minutes} minutes.\n"
                  f"A record {runners:,} runners took part, raising money for the town's hospital.")
    return article, highlights


def science_fair(rng):
    town, student, age, prize = rng.choice(TOWNS), person(rng), rng.randint(12, 17), rng.randint(1, 10)
    project = rng.choice(["a water filter made from sand and charcoal", "a sensor that warns of frost on roads",
                          "a robot that sorts recycling by colour", "a cheap test for soil acidity",
                          "a solar oven built from old windows"])
    article = (
        f"A {age}-year-old student from {town} has won the regional science fair with {project}. {student} "
        f"spent eight months on the project, working in a garage after school. The judges said the work was "
        f"simple, cheap and well tested. The prize includes {prize},000 dollars for the student's school and a "
        f"week at a university laboratory. \"My teacher told me to keep a notebook of everything that went "
        f"wrong,\" {student.split()[0]} said. \"That notebook is longer than the report.\" Three other students "
        f"from the same school reached the final round. The head teacher said the school will use the prize "
        f"money to build a new science room.")
    highlights = (f"{student}, {age}, from {town} wins the regional science fair with {project}.\n"
                  f"The prize brings {prize},000 dollars to the student's school, which plans a new science room.")
    return article, highlights


def museum(rng):
    town, curator, objects, weeks, century = rng.choice(TOWNS), person(rng), rng.randint(60, 400), \
        rng.randint(6, 26), rng.choice(["17th", "18th", "19th"])
    article = (
        f"The {town} museum has opened an exhibition of {objects} objects found during the digging of a new car "
        f"park last year. The finds include coins, pottery and the wooden wheel of a cart from the {century} "
        f"century. Curator {curator} said the wheel is the best preserved of its kind in the region. \"Wet clay "
        f"kept the air away from it for centuries,\" {curator.split()[0]} said. Volunteers spent months cleaning "
        f"and labelling the objects. The exhibition is free and will run for {weeks} weeks. School groups can "
        f"book guided visits, and on Saturdays children can try cleaning copies of the coins themselves. The "
        f"car park, meanwhile, is due to open in the spring.")
    highlights = (f"{town} museum shows {objects} objects found while digging a new car park.\n"
                  f"They include a {century}-century cart wheel, the best preserved in the region.\n"
                  f"The free exhibition runs for {weeks} weeks.")
    return article, highlights


def rescue(rng):
    town, rescuer, hours, age = rng.choice(TOWNS), person(rng), rng.randint(2, 9), rng.randint(8, 14)
    animal = rng.choice(["dog", "pony", "goat", "calf"])
    article = (
        f"Firefighters in {town} spent {hours} hours on Thursday rescuing a {animal} that had fallen into a "
        f"disused well on a farm outside the town. The animal belongs to a {age}-year-old girl, who raised the "
        f"alarm after hearing it in the well. Crew leader {rescuer} said the well was about thirty feet deep and "
        f"too narrow for a firefighter to climb down safely. The team lowered a harness and lifted the {animal} "
        f"out slowly with a rope and pulley. A vet checked it on the spot and found only a few scratches. "
        f"\"It was cold and muddy but very calm,\" {rescuer.split()[0]} said. The farm's owner has promised to "
        f"seal the well this week.")
    highlights = (f"Firefighters in {town} rescue a {animal} from a thirty-foot disused well after {hours} hours.\n"
                  f"The animal, owned by a {age}-year-old girl, had only a few scratches.\n"
                  f"The farm's owner will seal the well.")
    return article, highlights


TEMPLATES = [council_bridge, bakery_award, storm, library, marathon, science_fair, museum, rescue]


def rows() -> list[dict]:
    rng = random.Random(SEED)
    out = []
    for _ in range(PER_TEMPLATE):
        for make in TEMPLATES:
            article, highlights = make(rng)
            out.append({"id": hashlib.sha1(article.encode()).hexdigest(), "article": article,
                        "highlights": highlights})
    return out


def main() -> None:
    with open(OUT, "w", encoding="utf-8") as f:
        for row in rows():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
