-- One row per order; line_items lists the order's lines (sku, quantity, unit_price) in line
-- order: a LIST of STRUCTs on DuckDB, a jsonb array of objects on PostgreSQL, an ARRAY of
-- OBJECTs on Snowflake.
with items as (
    select
        order_id,
        {% if target.type == 'postgres' -%}
        jsonb_agg(
            jsonb_build_object('sku', sku, 'quantity', quantity, 'unit_price', unit_price)
            order by line_no
        ) as line_items,
        {%- elif target.type == 'snowflake' -%}
        array_agg(
            object_construct('sku', sku, 'quantity', quantity, 'unit_price', unit_price)
        ) within group (order by line_no) as line_items,
        {%- else -%}
        list(
            struct_pack(sku := sku, quantity := quantity, unit_price := unit_price)
            order by line_no
        ) as line_items,
        {%- endif %}
        sum(quantity * unit_price)::decimal(12, 2) as order_total
    from {{ ref('raw_order_items') }}
    group by order_id
)
select
    o.order_id,
    o.user_id,
    u.email,
    o.ordered_at,
    o.status,
    i.line_items,
    coalesce(i.order_total, 0)::decimal(12, 2) as order_total
from {{ ref('raw_orders') }} as o
left join {{ ref('raw_users') }} as u using (user_id)
left join items as i using (order_id)
