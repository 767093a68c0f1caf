"""Google place types each Places API accepts as a search filter (checked at config load).

Why: the two APIs have different type tables. ``historical_landmark`` (and ``monument``,
``cultural_landmark``, ``national_park``, ...) exist only in the Places API (New) Table A; the
legacy Nearby Search answers a ``type`` it does not know with ``INVALID_REQUEST``, which
aborted a whole crawl. So ``crawl.places.included_types`` (New) and
``crawl.places.legacy_types`` (legacy) are separate lists, each checked against its API's
table when the config is loaded.

Sources (Google Maps Platform documentation): the legacy "Place Types" page, Table 1 (types
supported in place searches; the legacy API is frozen, so this list no longer changes), plus
the older types it still accepts in searches though Table 2 lists them as deprecated
(``establishment``, ``food``, ...); and the "Place Types (New)" page, Table A (types usable
in ``includedTypes``), which contains the legacy Table 1 types plus many new ones. Table A
grows; ``NEW_ONLY`` holds the additions geopak knows (culture, recreation, nature, worship,
sports, transport, lodging, shopping). Table B types (``point_of_interest``, ``locality``,
...) may be returned but not searched for in either API.
"""

from __future__ import annotations

import difflib

LEGACY_TABLE_1: frozenset[str] = frozenset(
    """
    accounting airport amusement_park aquarium art_gallery atm bakery bank bar beauty_salon
    bicycle_store book_store bowling_alley bus_station cafe campground car_dealer car_rental
    car_repair car_wash casino cemetery church city_hall clothing_store convenience_store
    courthouse dentist department_store doctor drugstore electrician electronics_store embassy
    fire_station florist funeral_home furniture_store gas_station gym hair_care hardware_store
    hindu_temple home_goods_store hospital insurance_agency jewelry_store laundry lawyer library
    light_rail_station liquor_store local_government_office locksmith lodging meal_delivery
    meal_takeaway mosque movie_rental movie_theater moving_company museum night_club painter
    park parking pet_store pharmacy physiotherapist plumber police post_office primary_school
    real_estate_agency restaurant roofing_contractor rv_park school secondary_school shoe_store
    shopping_mall spa stadium storage store subway_station supermarket synagogue taxi_stand
    tourist_attraction train_station transit_station travel_agency university veterinary_care
    zoo
    """.split()
)
# Deprecated in the legacy docs (Table 2) but still accepted by its searches.
LEGACY_DEPRECATED: frozenset[str] = frozenset(
    "establishment finance food general_contractor grocery_or_supermarket health "
    "place_of_worship".split()
)
LEGACY_TYPES: frozenset[str] = LEGACY_TABLE_1 | LEGACY_DEPRECATED

NEW_ONLY: frozenset[str] = frozenset(
    """
    art_studio auditorium cultural_landmark historical_place monument performing_arts_theater
    sculpture
    adventure_sports_center amphitheatre amusement_center banquet_hall barbecue_area
    botanical_garden childrens_camp comedy_club community_center concert_hall convention_center
    cultural_center cycling_park dance_hall dog_park event_venue ferris_wheel garden hiking_area
    historical_landmark internet_cafe karaoke marina national_park observation_deck
    off_roading_area opera_house philharmonic_hall picnic_ground planetarium plaza
    roller_coaster skateboard_park state_park video_arcade visitor_center water_park
    wedding_venue wildlife_park wildlife_refuge
    beach
    arena athletic_field fishing_charter fishing_pond fitness_center golf_course
    ice_skating_rink playground ski_resort sports_activity_location sports_club
    sports_coaching sports_complex swimming_pool
    airstrip bus_stop ferry_terminal heliport international_airport park_and_ride
    transit_depot truck_stop
    bed_and_breakfast budget_japanese_inn campground camping_cabin cottage extended_stay_hotel
    farmstay guest_house hostel hotel inn japanese_inn motel private_guest_room resort_hotel
    asian_grocery_store auto_parts_store butcher_shop cell_phone_store discount_store
    food_store gift_shop grocery_store market sporting_goods_store warehouse_store
    wholesaler
    government_office
    """.split()
)
NEW_TABLE_A: frozenset[str] = LEGACY_TABLE_1 | NEW_ONLY


def unknown_types(types: list[str], api: str) -> list[str]:
    """The entries of ``types`` the given API (``"new"`` or ``"legacy"``) does not accept."""
    table = NEW_TABLE_A if api == "new" else LEGACY_TYPES
    return [t for t in types if t not in table]


def explain(bad: str, api: str) -> str:
    """Why ``bad`` is refused for ``api``, with the nearest valid names."""
    table = NEW_TABLE_A if api == "new" else LEGACY_TYPES
    if api == "legacy" and bad in NEW_TABLE_A:
        why = "a Places API (New) type the legacy API does not know (use it in crawl.places.included_types)"
    elif api == "new" and bad in LEGACY_DEPRECATED:
        why = "a deprecated legacy type that Places API (New) does not accept"
    else:
        why = "not a searchable type of that API"
    close = difflib.get_close_matches(bad, sorted(table), n=3)
    return why + (f"; did you mean {', '.join(close)}?" if close else "")


__all__ = ["LEGACY_TYPES", "NEW_TABLE_A", "explain", "unknown_types"]
